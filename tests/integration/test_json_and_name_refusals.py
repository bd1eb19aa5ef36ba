"""The edge's JSON and name refusals (issue 20): non-finite numbers, lone surrogates, error
bodies that always render and cap what they quote, and over-long names over gRPC, on a real
stack on 127.0.0.1; none of them may keep a slot or a backend stream."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest

from synctalk.rpc.gen.lipsync.v1 import (
    avatar_pb2,
    avatar_pb2_grpc,
    renderer_pb2,
    renderer_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from tests.support.stack import Edge, Stack


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    """/debug/config is among the routes whose bodies are checked."""
    return stack.edge(debug={"endpoints": True})


@pytest.fixture
def clean(stack: Stack, edge: Edge) -> Iterator[None]:
    yield
    stack.settle(edge)


SESSION = "0" * 32


@pytest.mark.parametrize("path,body,needle", [
    ("/generate", b'{"text": NaN}', "non-finite number NaN"),
    ("/generate", b'{"text": "Hi.", "voice": Infinity}', "non-finite number Infinity"),
    ("/generate", b'{"text": "Hi \\udc00."}', "lone surrogate"),
    ("/generate", b'{"\\ud800": 1, "text": "Hi."}', "lone surrogate"),
    ("/generate", b'{"text": "\xff\xfe"}', "lone surrogate"),  # not UTF-8 at all
    ("/debug/config", b'{"enabled": NaN}', "non-finite number NaN"),
    ("/debug/config", b'{"enabled": "\\ud800"}', "lone surrogate"),
    (f"/sessions/{SESSION}/stats", b'{"fps": -Infinity}', "non-finite number -Infinity"),
    (f"/sessions/{SESSION}/stats", b'{"fps": NaN, "av_offset_ms": NaN}', "non-finite"),
    (f"/sessions/{SESSION}/stats", b'[1e999]', "non-finite number inf"),  # parses to inf
])
def test_json_with_non_finite_numbers_or_bad_unicode_gets_422(
        client: httpx.Client, clean: None, path: str, body: bytes, needle: str) -> None:
    for headers in ({"Content-Type": "application/json"}, {}):
        reply = client.post(path, content=body, headers=headers)
        assert reply.status_code == 422, (path, body, reply.text)
        assert needle in reply.text if headers else True
        reply.json()  # renders as JSON


@pytest.mark.parametrize("body", [b'{"text": "Hi.", "voice": "\xff"}', b"\xff\xfe\x00",
                                  b'{"fps": 1e999}', b'"' + b"\\ud800" * 5000 + b'"'])
def test_error_bodies_always_render(client: httpx.Client, clean: None, body: bytes) -> None:
    for path in ("/generate", "/debug/config", f"/sessions/{SESSION}/stats"):
        for content_type in ("application/json", "text/plain", None):
            headers = {"Content-Type": content_type} if content_type else {}
            reply = client.post(path, content=body, headers=headers)
            assert 400 <= reply.status_code < 500, (path, body[:40], reply.text)
            assert len(reply.text) < 4096
            reply.json()


def test_error_texts_cap_what_they_quote(client: httpx.Client, clean: None) -> None:
    reply = client.post("/generate", json={"text": "Hi.", "voice": "v" * 10_000})
    assert reply.status_code == 422 and len(reply.text) < 2048
    reply = client.post("/generate", json={"text": ["x" * 10_000]})
    assert reply.status_code == 422 and len(reply.text) < 2048
    reply = client.get("/generate", params={"text": "Hi.", "format": "y" * 10_000})
    assert reply.status_code == 422 and len(reply.text) < 2048


@pytest.mark.parametrize("config,field", [
    (avatar_pb2.AnimateConfig(avatar="a" * 100_000), "avatar"),
    (avatar_pb2.AnimateConfig(voice="v" * 100_000), "voice"),
    (avatar_pb2.AnimateConfig(avatar="\u00e9" * 65), "avatar"),
])
def test_long_names_over_animate_get_invalid_argument(edge: Edge, clean: None,
                                                      config: avatar_pb2.AnimateConfig,
                                                      field: str) -> None:
    with grpc.insecure_channel(edge.grpc_address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(avatar_pb2_grpc.AvatarStub(channel).Animate(
                iter([avatar_pb2.AnimateRequest(config=config)]), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert caught.value.details().startswith(f"{field}: ") and len(caught.value.details()) < 200


def test_backends_cap_echoed_names(stack: Stack) -> None:
    """Called directly, the renderer and TTS answer an over-long name with their documented
    status and a short message, never RESOURCE_EXHAUSTED (details past the metadata limit)."""
    with grpc.insecure_channel(stack.renderers[0].address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            renderer_pb2_grpc.RendererStub(channel).GetAvatar(
                renderer_pb2.GetAvatarRequest(name="a" * 1_000_000), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(caught.value.details()) <= 1100
    with grpc.insecure_channel(stack.tts.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(iter([
                tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig(voice="v" * 1_000_000)),
                tts_pb2.SynthesizeRequest(text=b"Hi.")]), timeout=30))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(caught.value.details()) < 200
