"""The Renderer gRPC service on a real server on 127.0.0.1 with tiny real avatars: frames in
order with the walk and idle flags, concurrent streams and cancellation, backpressure,
avatar listing, and the status code of each bad input (the server stays healthy after each)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.renderer.server import SERVICE_NAME
from services.renderer.stream import RenderStream
from synctalk.audio.levels import frame_levels
from synctalk.avatar import PingPong
from synctalk.config import load_settings
from synctalk.features import get_extractor
from synctalk.render.encode import decode_raw_rgb
from synctalk.render.idle import IdleRule
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2
from tests.support.avatars import make_avatar, speech_with_pauses
from tests.support.renderer import Stub, config, feature_request, run_with_server, settings

RAW = common_pb2.IMAGE_ENCODING_RAW_RGB


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("avatars")
    make_avatar(root, "tiny")
    make_avatar(root, "wide", num_frames=6, height=200, width=300, seed=3, jpeg=True)
    (root / "not-an-avatar").mkdir()
    broken = make_avatar(root, "broken", num_frames=4)
    np.save(broken / "boxes.npy", np.zeros((4, 3), np.int32))
    return root


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features [50,32,16,16], rms, voiced) of 2 s of pause-speech-pause, as AudioFeatures
    would stream them."""
    audio = speech_with_pauses(2.0)
    features = get_extractor("ave", load_settings(models={"device": "cpu"}).models).extract(audio)
    rms, voiced = frame_levels(audio)
    return features, rms, voiced


def frames_of(speech, n: int | None = None) -> list[renderer_pb2.RenderRequest]:
    features, rms, voiced = speech
    n = len(features) if n is None else n
    return [feature_request(i, features[i], float(rms[i]), bool(voiced[i])) for i in range(n)]


async def requests(first: renderer_pb2.RenderRequest | None,
                   rest: Iterable[renderer_pb2.RenderRequest]) -> AsyncIterator[renderer_pb2.RenderRequest]:
    if first is not None:
        yield first
    for r in rest:
        yield r


async def render(stub: Stub, first, rest,
                 timeout: float | None = 60) -> list[common_pb2.VideoFrame]:  # noqa: ASYNC109 - the gRPC deadline
    return [f async for f in stub.Render(requests(first, rest), timeout=timeout)]


async def assert_still_healthy(stub: Stub, channel: grpc.aio.Channel, speech) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    frames = await render(stub, config(), frames_of(speech, 3))
    assert [f.index for f in frames] == [0, 1, 2]


def test_frames_come_back_in_order_with_walk_idle_and_encoding(store: Path, speech) -> None:
    features, rms, voiced = speech

    async def body(stub, channel, servicer):
        jpeg = await render(stub, config("tiny", start_frame=7), frames_of(speech))
        crops = await render(stub, config("wide", crop_only=True, encoding=RAW),
                             frames_of(speech, 4))
        return jpeg, crops, servicer

    jpeg, crops, servicer = run_with_server(body, settings(store))
    n = len(features)
    assert n == 50
    assert [f.index for f in jpeg] == list(range(n))
    assert [f.pts_ms for f in jpeg] == [40 * i for i in range(n)]
    walk = PingPong(12, 7)
    assert [f.source_frame for f in jpeg] == [walk.index(i) for i in range(n)]
    rule = IdleRule()
    expected_idle = [rule.step(bool(v), float(r)) for v, r in zip(voiced, rms, strict=True)]
    assert [f.idle for f in jpeg] == expected_idle
    assert any(expected_idle) and not all(expected_idle)
    for f in jpeg:
        assert f.encoding == common_pb2.IMAGE_ENCODING_JPEG and (f.width, f.height) == (256, 256)
        image = cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (256, 256, 3)
    assert [(f.width, f.height, f.encoding) for f in crops] == [(328, 328, RAW)] * 4
    assert all(len(f.data) == 328 * 328 * 3 for f in crops)
    assert servicer.active == {} and servicer.batcher.items_run >= n + 4
    assert servicer.batcher.batches_run < servicer.batcher.items_run  # frames were batched


async def _render_raw(stub: Stub, avatar: str, reqs) -> list[np.ndarray]:
    out = []
    async for f in stub.Render(requests(config(avatar, encoding=RAW), reqs), timeout=60):
        out.append((f.index, f.source_frame, decode_raw_rgb(f.data, f.width, f.height)))
    return out


def test_concurrent_streams_keep_order_and_cancelling_one_frees_it(store: Path, speech) -> None:
    features, rms, voiced = speech
    n = 30

    async def endless() -> AsyncIterator[renderer_pb2.RenderRequest]:
        yield config("wide", encoding=RAW)
        i = 0
        while True:
            yield feature_request(i, features[i % len(features)], 0.1, True)
            i += 1
            await asyncio.sleep(0)

    async def body(stub, channel, servicer):
        solo = await _render_raw(stub, "tiny", frames_of(speech, n))
        b_call = stub.Render(endless(), timeout=60)
        a_task = asyncio.create_task(_render_raw(stub, "tiny", frames_of(speech, n)))
        b_frames = []
        async for f in b_call:
            b_frames.append(f)
            if len(b_frames) == 5:
                break
        b_stream: RenderStream = next(s for s in servicer.active.values() if s.avatar == "wide")
        b_call.cancel()
        for _ in range(100):
            if b_stream.closed:
                break
            await asyncio.sleep(0.02)
        submitted_at_cancel = b_stream.submitted
        a = await a_task
        await asyncio.sleep(0.3)
        return solo, a, b_frames, b_stream, submitted_at_cancel, servicer

    solo, a, b_frames, b_stream, submitted_at_cancel, servicer = run_with_server(
        body, settings(store, batch_size=4, batch_wait_ms=20))
    assert [f.index for f in b_frames] == [0, 1, 2, 3, 4]
    assert [f.source_frame for f in b_frames] == [PingPong(6).index(i) for i in range(5)]
    assert [i for i, _, _ in a] == list(range(n))
    for (ia, sa, fa), (i0, s0, f0) in zip(a, solo, strict=True):
        assert (ia, sa) == (i0, s0) and np.array_equal(fa, f0)
    # B stopped: closed, nothing left in flight, no more frames submitted after the cancel,
    # and never more than its queue bound ahead of what it sent.
    assert b_stream.closed and not b_stream.pending and b_stream.queue.empty()
    assert b_stream.submitted == submitted_at_cancel
    assert b_stream.submitted <= b_stream.sent + servicer.inflight
    assert servicer.active == {}


def test_a_slow_reader_slows_the_stream_instead_of_buffering(store: Path, speech) -> None:
    features = speech[0]
    n = 150

    def many() -> list[renderer_pb2.RenderRequest]:
        return [feature_request(i, features[i % len(features)], 0.1, True) for i in range(n)]

    async def body(stub, channel, servicer):
        call = stub.Render(requests(config("wide", encoding=RAW), many()), timeout=120)
        first = await anext(aiter(call))
        stream = next(iter(servicer.active.values()))
        await asyncio.sleep(2.0)  # the client reads nothing for 2 s
        stalled = (stream.submitted, stream.sent)
        rest = [f async for f in call]
        return first, stalled, rest, servicer.inflight

    first, (submitted, sent), rest, inflight = run_with_server(
        body, settings(store, batch_size=4))
    assert first.index == 0 and [f.index for f in rest] == list(range(1, n))
    assert sent < n - 10  # the transport stopped taking frames nobody reads...
    assert submitted <= sent + inflight  # ...and the renderer stopped with it


def test_list_and_get_avatars(store: Path) -> None:
    async def body(stub, channel, servicer):
        listed = await stub.ListAvatars(renderer_pb2.ListAvatarsRequest())
        info = await stub.GetAvatar(renderer_pb2.GetAvatarRequest(name="wide"))
        errors = []
        for name in ("nobody", "../tiny", "not-an-avatar"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetAvatar(renderer_pb2.GetAvatarRequest(name=name))
            errors.append((err.value.code(), err.value.details()))
        return listed, info, errors

    listed, info, errors = run_with_server(body, settings(store))
    by_name = {a.name: a for a in listed.avatars}
    assert sorted(by_name) == ["tiny", "wide"]  # 'broken' loads badly, the empty dir is skipped
    assert (by_name["tiny"].width, by_name["tiny"].height, by_name["tiny"].num_frames) == (256, 256, 12)
    assert list(by_name["tiny"].feature_modes) == ["ave"] and by_name["tiny"].fps == 25
    assert by_name["tiny"].still_jpeg == b""
    assert (info.name, info.width, info.height, info.num_frames) == ("wide", 300, 200, 6)
    still = cv2.imdecode(np.frombuffer(info.still_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert still.shape == (200, 300, 3)
    assert errors[0][0] == grpc.StatusCode.NOT_FOUND
    assert errors[1][0] == grpc.StatusCode.INVALID_ARGUMENT and errors[1][1].startswith("name: ")
    assert errors[2][0] == grpc.StatusCode.NOT_FOUND


def _bad_cases(speech):
    features = speech[0]
    good = [feature_request(i, features[i]) for i in range(3)]
    wrong_shape = np.zeros((16, 512), np.float32)
    return [
        ("unknown avatar", config("nobody"), good, grpc.StatusCode.NOT_FOUND, "unknown avatar"),
        ("bad name", config("../x"), good, grpc.StatusCode.INVALID_ARGUMENT, "config.avatar: "),
        ("empty name", config(""), good, grpc.StatusCode.INVALID_ARGUMENT, "config.avatar: "),
        ("no config", None, good, grpc.StatusCode.INVALID_ARGUMENT, "config: "),
        ("empty stream", None, [], grpc.StatusCode.INVALID_ARGUMENT, "config: "),
        ("shape", config(), [feature_request(0, wrong_shape)], grpc.StatusCode.INVALID_ARGUMENT,
         "frame.features.shape: expected [32,16,16], got [16,512]"),
        ("dtype", config(), [feature_request(0, features[0],
                                             tensor={"dtype": common_pb2.DTYPE_UINT8})],
         grpc.StatusCode.INVALID_ARGUMENT, "frame.features.dtype: "),
        ("bytes", config(), [feature_request(0, features[0], tensor={"data": b"\x00" * 100})],
         grpc.StatusCode.INVALID_ARGUMENT, "frame.features.data: expected 32768 bytes"),
        ("nan", config(), [feature_request(0, np.full((32, 16, 16), np.nan, np.float32))],
         grpc.StatusCode.INVALID_ARGUMENT, "frame.features.data: "),
        ("order", config(), [good[0], good[1], feature_request(5, features[5])],
         grpc.StatusCode.INVALID_ARGUMENT, "frame.index: expected 2"),
        ("second config", config(), [good[0], config()], grpc.StatusCode.INVALID_ARGUMENT, "frame: "),
        ("unknown mode", config(), [feature_request(0, features[0], mode="hubert")],
         grpc.StatusCode.INVALID_ARGUMENT, "frame.mode: "),
        ("no unet for mode", config(), [feature_request(0, np.zeros((32, 16, 24), np.float32),
                                                        mode="whisper")],
         grpc.StatusCode.FAILED_PRECONDITION, "avatar 'tiny' has no U-Net for feature mode"),
        ("broken avatar", config("broken"), good, grpc.StatusCode.FAILED_PRECONDITION,
         "avatar 'broken' cannot be used"),
        ("start frame", config(start_frame=12), good, grpc.StatusCode.INVALID_ARGUMENT,
         "config.start_frame: "),
        ("jpeg quality", config(jpeg_quality=101), good, grpc.StatusCode.INVALID_ARGUMENT,
         "config.jpeg_quality: "),
        ("too many frames", config(), [feature_request(i, features[i]) for i in range(5)],
         grpc.StatusCode.RESOURCE_EXHAUSTED, "stream longer than renderer.max_frames=4"),
    ]


def test_bad_input_gets_its_status_and_the_server_stays_healthy(store: Path, speech) -> None:
    cases = _bad_cases(speech)

    async def body(stub, channel, servicer):
        results = []
        for name, first, rest, _, _ in cases:
            received: list[int] = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for f in stub.Render(requests(first, rest), timeout=60):
                    received.append(f.index)
            results.append((name, err.value.code(), err.value.details(), received))
            await assert_still_healthy(stub, channel, speech)
        return results, servicer

    results, servicer = run_with_server(body, settings(store, max_frames=4))
    for (name, _, _, code, prefix), (_, got_code, details, received) in zip(cases, results,
                                                                             strict=True):
        assert got_code == code, (name, details)
        assert details.startswith(prefix), (name, details)
        if name == "order":
            assert received == [0, 1]  # frames before the bad one still came back
        if name == "too many frames":
            assert received == [0, 1, 2, 3]
    assert servicer.active == {}


def test_a_stream_that_never_ends_hits_its_deadline(store: Path, speech) -> None:
    async def stuck() -> AsyncIterator[renderer_pb2.RenderRequest]:
        yield config()
        yield feature_request(0, speech[0][0])
        await asyncio.Event().wait()

    async def body(stub, channel, servicer):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Render(stuck(), timeout=1.0):
                pass
        await asyncio.sleep(0.1)
        active = dict(servicer.active)
        await assert_still_healthy(stub, channel, speech)
        return err.value.code(), active

    code, active = run_with_server(body, settings(store))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and active == {}


def test_a_retrained_checkpoint_is_picked_up(store: Path, tmp_path: Path, speech) -> None:
    root = tmp_path / "store"
    shutil.copytree(store / "tiny", root / "tiny")

    async def body(stub, channel, servicer):
        before = await _render_raw(stub, "tiny", frames_of(speech, 2))
        make_avatar(root, "tiny", seed=9)  # new frames, boxes and weights in place
        after = await _render_raw(stub, "tiny", frames_of(speech, 2))
        return before, after, servicer.store.model_loads

    before, after, loads = run_with_server(body, settings(root))
    assert loads == 2 and not np.array_equal(before[0][2], after[0][2])
