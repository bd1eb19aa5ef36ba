"""The bad-input catalogue (docs/security.md), gRPC: over-size messages, streams that never
end and tensors that lie about their bytes, to the edge and each backend on a real stack on
127.0.0.1. After each refusal the edge must still serve and hold no session or downstream
stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from synctalk.rpc.gen.lipsync.v1 import (
    avatar_pb2,
    avatar_pb2_grpc,
    common_pb2,
    renderer_pb2,
    renderer_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from tests.support import bad_input
from tests.support.audio import tone_pcm
from tests.support.bad_input import MAX_MESSAGE_BYTES
from tests.support.stack import AVATAR, Edge, Stack

private_tmp, edge, clean = bad_input.register()


def _animate_error(edge: Edge, requests: list[avatar_pb2.AnimateRequest],
                   timeout: float = 30) -> grpc.RpcError:
    with grpc.insecure_channel(edge.grpc_address) as channel:
        stub = avatar_pb2_grpc.AvatarStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Animate(iter(requests), timeout=timeout))
        frames = list(stub.Animate(iter([avatar_pb2.AnimateRequest(
            config=avatar_pb2.AnimateConfig()), avatar_pb2.AnimateRequest(
            audio=common_pb2.AudioChunk(pcm=tone_pcm(0.2)))]), timeout=30))
        assert len(frames) == 5  # the next good call works
    return caught.value


def test_animate_message_over_the_size_cap(edge: Edge, clean: None) -> None:
    error = _animate_error(edge, [
        avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig()),
        avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=b"\0" * 2 * MAX_MESSAGE_BYTES))])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_animate_text_of_a_million_chars(edge: Edge, clean: None) -> None:
    error = _animate_error(edge, [avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig()),
                                  avatar_pb2.AnimateRequest(text=b"a " * 500_000)])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5000 characters" in error.details()


def test_animate_text_before_config(edge: Edge, clean: None) -> None:
    error = _animate_error(edge, [avatar_pb2.AnimateRequest(text=b"Hi."),
                                  avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig())])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("config:")


def test_animate_stream_that_never_ends_hits_its_deadline(stack: Stack, edge: Edge,
                                                          clean: None) -> None:
    async def never_ending() -> AsyncIterator[avatar_pb2.AnimateRequest]:
        yield avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(avatar=AVATAR))
        yield avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=tone_pcm(0.4)))
        await asyncio.Event().wait()

    async def call() -> tuple[grpc.StatusCode, int]:
        received = 0
        async with grpc.aio.insecure_channel(edge.grpc_address) as channel:
            stub = avatar_pb2_grpc.AvatarStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.Animate(never_ending(), timeout=3.0):
                    received += 1
        return caught.value.code(), received

    code, received = asyncio.run(call())
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received >= 10  # frames flowed until the deadline (the silence tail included)


def test_tts_stream_that_never_ends_hits_its_deadline(stack: Stack) -> None:
    async def never_ending() -> AsyncIterator[tts_pb2.SynthesizeRequest]:
        yield tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig())
        yield tts_pb2.SynthesizeRequest(text=b"Half a sent")
        await asyncio.Event().wait()

    async def call() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(stack.tts.address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.Synthesize(never_ending(), timeout=1.0):
                    pass
            return caught.value.code()

    assert asyncio.run(call()) == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while stack.inflight()["tts"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stack.inflight()["tts"] == 0


def test_over_size_messages_to_the_backends(stack: Stack) -> None:
    """Each backend caps a message at server.max_message_bytes (8 MiB by default)."""
    big = 9 * 1024 * 1024
    with grpc.insecure_channel(stack.tts.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Synthesize(iter([tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig()),
                                       tts_pb2.SynthesizeRequest(text=b"a" * big)]), timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = list(stub.Synthesize(iter([tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig()),
                                        tts_pb2.SynthesizeRequest(text=b"Fine.")]), timeout=30))
        assert sum(len(c.pcm) for c in ok) > 1000
    with grpc.insecure_channel(stack.renderers[0].address) as channel:
        renderer = renderer_pb2_grpc.RendererStub(channel)
        tensor = common_pb2.Tensor(data=b"\0" * big, shape=[32, 16, 16],
                                   dtype=common_pb2.DTYPE_FLOAT32)
        with pytest.raises(grpc.RpcError) as caught:
            list(renderer.Render(iter([
                renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=AVATAR)),
                renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(features=tensor))]),
                timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("tensor,field,needle", [
    pytest.param({"data": b"\0" * 32 * 16 * 16 * 4, "dtype": common_pb2.DTYPE_FLOAT16},
                 "frame.features.data", "expected 16384 bytes", id="float16 of float32 bytes"),
    pytest.param({"data": b"\0" * 32 * 16 * 16 * 4, "shape": [32, 16, 8]},
                 "frame.features.shape", "expected [32,16,16]", id="shape smaller than data"),
    pytest.param({"data": b"\0" * 32 * 16 * 16 * 4, "shape": [-1, 16, 16]},
                 "frame.features.shape", "got [-1,16,16]", id="negative dimension"),
])
def test_tensor_that_lies_about_its_bytes(stack: Stack, tensor: dict, field: str,
                                          needle: str) -> None:
    fields = {"shape": [32, 16, 16], "dtype": common_pb2.DTYPE_FLOAT32, **tensor}
    with grpc.insecure_channel(stack.renderers[0].address) as channel:
        renderer = renderer_pb2_grpc.RendererStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(renderer.Render(iter([
                renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=AVATAR)),
                renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(
                    features=common_pb2.Tensor(**fields)))]), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}: ") and needle in caught.value.details()
