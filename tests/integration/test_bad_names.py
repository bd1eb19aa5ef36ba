"""The bad-input catalogue (docs/security.md), names: path-like avatar and voice names over
HTTP and gRPC, and debug settings that try to point somewhere, on a real stack on 127.0.0.1.
After each refusal the edge must still serve, hold no session or downstream stream, and have
left no temporary file (named or open) behind."""

from __future__ import annotations

import grpc
import httpx
import pytest

from synctalk.rpc.gen.lipsync.v1 import (
    avatar_pb2,
    avatar_pb2_grpc,
    renderer_pb2,
    renderer_pb2_grpc,
)
from tests.support import bad_input
from tests.support.hostile_audio import (
    WAV_1S,
)
from tests.support.http import assert_clean_error, upload
from tests.support.stack import Edge, Stack

private_tmp, edge, clean = bad_input.register()


HOSTILE_NAMES = ["..", "../demo", "./demo", "demo/../demo", "a/b", "/etc/passwd", "demo\x00",
                 "x\x00/../demo", "%2e%2e", "demo\\..\\demo"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_avatar_names_are_unknown(client: httpx.Client, clean: None, name: str) -> None:
    """Never resolved as paths: even names that would lead back to the real avatar miss."""
    for reply in (client.get("/avatar", params={"avatar": name}),
                  client.get("/generate", params={"text": "Hi.", "avatar": name}),
                  upload(client, WAV_1S, avatar=name)):
        assert_clean_error(reply, 404, "unknown avatar")


def test_hostile_names_over_grpc(stack: Stack, edge: Edge) -> None:
    with grpc.insecure_channel(stack.renderers[0].address) as channel:
        renderer = renderer_pb2_grpc.RendererStub(channel)
        for name in HOSTILE_NAMES:
            with pytest.raises(grpc.RpcError) as caught:
                renderer.GetAvatar(renderer_pb2.GetAvatarRequest(name=name), timeout=10)
            assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                           grpc.StatusCode.NOT_FOUND), name
    with grpc.insecure_channel(edge.grpc_address) as channel:
        stub = avatar_pb2_grpc.AvatarStub(channel)
        for name in ["../demo", "demo\x00", "a/b"]:
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Animate(iter([avatar_pb2.AnimateRequest(
                    config=avatar_pb2.AnimateConfig(avatar=name))]), timeout=10))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, name
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Animate(iter([avatar_pb2.AnimateRequest(
                config=avatar_pb2.AnimateConfig(voice="../../etc/passwd"))]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("body,needle", [
    pytest.param({"frames_dir": "/etc"}, "frames_dir", id="frames_dir"),
    pytest.param({"audio_dir": "../../x"}, "audio_dir", id="audio_dir"),
    pytest.param({"token": ""}, "token", id="token"),
    pytest.param({"enabled": "yes please"}, "enabled", id="wrong type"),
    pytest.param([True], "dict", id="not an object"),
])
def test_debug_config_refuses_extra_or_mistyped_fields(client: httpx.Client, clean: None,
                                                       body: object, needle: str) -> None:
    """The dump directories and the token are config-file only: the API cannot point the
    dumps at an arbitrary path or clear the token."""
    assert_clean_error(client.post("/debug/config", json=body), 422, needle)
    assert client.get("/debug/status").json()["enabled"] is False
