"""The AudioFeatures gRPC service on a real server on 127.0.0.1: chunk-size invariance against
the offline extractor in both modes, ListModes, and the status code of each bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.audio_features.server import SERVICE_NAME, build_server
from synctalk.audio.levels import frame_levels
from synctalk.audio.pcm import float_to_s16le
from synctalk.config import Settings, load_settings
from synctalk.features import get_extractor
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import audio_features_pb2, audio_features_pb2_grpc, common_pb2
from tests.support.audio import speech_16k

SIZES = [1, 333, 640, 16000]


def settings(server: dict[str, Any] | None = None, **services: Any) -> Settings:
    return load_settings(models={"device": "cpu"}, services=services, server=server or {})


def run_with_server(
    body: Callable[[audio_features_pb2_grpc.AudioFeaturesStub, grpc.aio.Channel], Awaitable[Any]],
    cfg: Settings | None = None,
) -> Any:
    async def main() -> Any:
        server = build_server(cfg or settings(), "127.0.0.1", 0)
        await server.start()
        try:
            async with dial(server.address) as channel:
                return await body(audio_features_pb2_grpc.AudioFeaturesStub(channel), channel)
        finally:
            await server.drain_and_stop()

    return asyncio.run(main())


async def chunks(pcm: bytes, size: int, start: int = 0) -> AsyncIterator[common_pb2.AudioChunk]:
    for offset in range(0, len(pcm), 2 * size):
        piece = pcm[offset : offset + 2 * size]
        yield common_pb2.AudioChunk(pcm=piece, sample_rate=16000, start_sample=start + offset // 2)


async def extract(stub, requests, mode: str | None = None,
                  timeout: float | None = None) -> list:  # noqa: ASYNC109 - the gRPC deadline
    metadata = (("x-feature-mode", mode),) if mode else None
    call = stub.Extract(requests, metadata=metadata, timeout=timeout)
    return [frame async for frame in call]


def features_of(frames: list[common_pb2.FeatureFrame]) -> np.ndarray:
    return np.stack([
        np.frombuffer(f.features.data, "<f4").reshape(tuple(f.features.shape)) for f in frames
    ])


async def assert_still_healthy(stub, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    pcm = float_to_s16le(speech_16k()[:6400])
    assert len(await extract(stub, chunks(pcm, 3200))) == 10


@pytest.mark.parametrize("mode", ["ave", "whisper"])
def test_stream_equals_offline_for_every_chunk_size(mode: str) -> None:
    audio = speech_16k()
    pcm = float_to_s16le(audio)
    offline = get_extractor(mode, settings().models).extract(audio)
    rms, voiced = frame_levels(audio)

    async def body(stub, channel):
        return [await extract(stub, chunks(pcm, size), mode) for size in SIZES]

    for size, frames in zip(SIZES, run_with_server(body), strict=True):
        assert len(frames) == int(np.ceil(7.3 * 25)) == offline.shape[0], size
        assert [f.index for f in frames] == list(range(len(frames)))
        assert [f.pts_ms for f in frames] == [40 * i for i in range(len(frames))]
        assert {f.mode for f in frames} == {mode}
        assert {f.features.dtype for f in frames} == {common_pb2.DTYPE_FLOAT32}
        assert np.array_equal(features_of(frames), offline), f"chunk size {size}"
        assert np.array_equal(np.array([f.rms for f in frames], np.float32), rms)
        assert [f.voiced for f in frames] == voiced.tolist()


def test_default_mode_and_list_modes() -> None:
    async def body(stub, channel):
        modes = await stub.ListModes(audio_features_pb2.ListModesRequest())
        frames = await extract(stub, chunks(float_to_s16le(speech_16k()[:3200]), 640))
        return modes, frames

    modes, frames = run_with_server(body, load_settings(models={"device": "cpu",
                                                                "feature_mode": "whisper"}))
    by_name = {m.name: m for m in modes.modes}
    assert list(by_name["ave"].shape) == [32, 16, 16]
    assert list(by_name["whisper"].shape) == [32, 16, 24]
    assert by_name["whisper"].is_default and not by_name["ave"].is_default
    assert by_name["ave"].lookahead_frames >= 8
    assert {f.mode for f in frames} == {"whisper"} and len(frames) == 5


def bad(**fields: Any) -> Callable[[], AsyncIterator[common_pb2.AudioChunk]]:
    """A stream whose second chunk carries the given fields."""

    async def requests() -> AsyncIterator[common_pb2.AudioChunk]:
        yield common_pb2.AudioChunk(pcm=b"\x00\x01" * 640, start_sample=0)
        second = {"pcm": b"\x00\x00" * 640, "start_sample": 640, **fields}
        yield common_pb2.AudioChunk(**second)

    return requests


@pytest.mark.parametrize(
    "requests,mode,field",
    [
        (bad(sample_rate=44100), None, "chunk[1].sample_rate"),
        (bad(pcm=b"\x00" * 3), None, "chunk[1].pcm"),
        (bad(start_sample=5000), None, "chunk[1].start_sample"),
        (bad(), "hubert", "x-feature-mode"),
    ],
)
def test_bad_input_is_invalid_argument(requests, mode: str | None, field: str) -> None:
    async def body(stub, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await extract(stub, requests(), mode)
        await assert_still_healthy(stub, channel)
        return err.value

    error = run_with_server(body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ")


def test_limits_are_resource_exhausted() -> None:
    cfg = settings({"max_message_bytes": 64 * 1024}, max_stream_seconds=1.0)

    async def body(stub, channel):
        codes = []
        for requests in (
            chunks(b"\x00\x00" * 40_000, 40_000),  # one 80 kB message over the 64 KiB cap
            chunks(b"\x00\x00" * 24_000, 4000),  # 1.5 s against max_stream_seconds=1
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await extract(stub, requests)
            codes.append((err.value.code(), err.value.details()))
            await assert_still_healthy(stub, channel)
        return codes

    (too_big, _), (too_long, details) = run_with_server(body, cfg)
    assert too_big == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert too_long == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_stream_seconds" in details


def test_stream_that_never_ends_hits_its_deadline() -> None:
    async def never_ending() -> AsyncIterator[common_pb2.AudioChunk]:
        yield common_pb2.AudioChunk(pcm=b"\x00\x00" * 640, start_sample=0)
        await asyncio.Event().wait()

    async def body(stub, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await extract(stub, never_ending(), timeout=0.5)
        await assert_still_healthy(stub, channel)
        return err.value.code()

    assert run_with_server(body) == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize("mode", ["ave", "whisper"])
def test_a_trimmed_stream_equals_the_trimmed_offline_features(mode: str) -> None:
    audio = speech_16k()[:48000]
    pcm = float_to_s16le(audio)
    extractor = get_extractor(mode, settings().models)

    async def body(stub, channel):
        modes = await stub.ListModes(audio_features_pb2.ListModesRequest())
        call = stub.Extract(chunks(pcm, 700), metadata=(("x-feature-mode", mode),
                                                        ("x-feature-trim", "3")))
        return modes, [frame async for frame in call]

    modes, frames = run_with_server(body)
    assert np.array_equal(features_of(frames), extractor.extract(audio, 3))
    assert not np.array_equal(features_of(frames), extractor.extract(audio))
    by_name = {m.name: m for m in modes.modes}
    trimmed = list(by_name[mode].trimmed_lookahead_frames)
    assert len(trimmed) == 8 and trimmed[0] == by_name[mode].lookahead_frames
    assert trimmed == [extractor.lookahead_for(t) for t in range(8)]
    assert trimmed == sorted(trimmed, reverse=True) and trimmed[3] < trimmed[0]


@pytest.mark.parametrize("value", ["8", "-1", "three", "", "1" * 40])
def test_a_trim_outside_0_to_7_is_invalid_argument(value: str) -> None:
    async def body(stub, channel):
        call = stub.Extract(chunks(float_to_s16le(speech_16k()[:3200]), 640),
                            metadata=(("x-feature-trim", value),))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        await assert_still_healthy(stub, channel)
        return caught.value

    error = run_with_server(body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-feature-trim" in error.details() and len(error.details()) < 200
