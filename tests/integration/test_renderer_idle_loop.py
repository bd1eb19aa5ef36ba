"""The Renderer's IdleLoop on a real server on 127.0.0.1: the loop's walk and frames (the same
closed mouth Render draws for silence), drawn by the U-Net once and then served from the
cache (the renderer's frame counters prove it), one drawing for concurrent first calls, the
cache budget, and the status of each bad request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from synctalk.config import load_settings
from synctalk.features import get_extractor
from synctalk.render.encode import decode_raw_rgb
from synctalk.render.idle_loop import IdleLoopShape
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2
from tests.support.avatars import make_avatar
from tests.support.renderer import config, feature_request, run_with_server, settings

RAW = common_pb2.IMAGE_ENCODING_RAW_RGB


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("avatars")
    make_avatar(root, "loop", num_frames=12)
    make_avatar(root, "loop2", num_frames=9, seed=2)
    make_avatar(root, "loop3", num_frames=7, seed=3)
    make_avatar(root, "loop4", num_frames=5, seed=4)
    return root


def unet_frames(avatar: str) -> float:
    return REGISTRY.get_sample_value("synctalk_renderer_frames_total", {"avatar": avatar}) or 0.0


def served(avatar: str, how: str) -> float:
    return REGISTRY.get_sample_value("synctalk_renderer_idle_loop_frames_total",
                                     {"avatar": avatar, "served": how}) or 0.0


async def loop_of(stub, avatar: str, **options) -> list[common_pb2.VideoFrame]:
    return [f async for f in stub.IdleLoop(renderer_pb2.IdleLoopRequest(avatar=avatar, **options))]


def test_the_loop_walks_forward_and_back_with_the_closed_mouth_render_draws(store: Path) -> None:
    """Every position's frame is the one a Render call draws for that source in a long
    silence (idle), and the walk is the loop shape's."""
    silence = np.zeros(32000, np.float32)
    features = get_extractor("ave", load_settings(models={"device": "cpu"}).models).extract(silence)

    async def body(stub, channel, servicer):
        loop = await loop_of(stub, "loop", encoding=RAW)

        async def requests():
            yield config("loop", encoding=RAW)
            for i in range(30):
                yield feature_request(i, features[i])

        rendered = [f async for f in stub.Render(requests())]
        return loop, rendered

    loop, rendered = run_with_server(body, settings(store))
    shape = IdleLoopShape(12)
    assert shape.length == 22
    assert [f.index for f in loop] == list(range(22))
    assert [f.source_frame for f in loop] == [shape.source(k) for k in range(22)]
    assert all(f.idle for f in loop)
    by_source = {f.source_frame: decode_raw_rgb(f.data, f.width, f.height).astype(int)
                 for f in rendered if f.idle}
    assert len(by_source) == 12
    for frame in loop:
        image = decode_raw_rgb(frame.data, frame.width, frame.height).astype(int)
        assert np.abs(image - by_source[frame.source_frame]).max() <= 1


def test_the_u_net_draws_a_loop_once_then_it_comes_from_the_cache(store: Path) -> None:
    async def body(stub, channel, servicer):
        before = unet_frames("loop2")
        first = await asyncio.gather(*(loop_of(stub, "loop2") for _ in range(3)))
        drawn = unet_frames("loop2") - before
        cached_before = served("loop2", "cache")
        again = [await loop_of(stub, "loop2") for _ in range(4)]
        return first, drawn, unet_frames("loop2") - before, again, \
            served("loop2", "cache") - cached_before

    first, drawn, drawn_after, again, from_cache = run_with_server(body, settings(store))
    length = IdleLoopShape(9).length
    assert drawn == length  # three concurrent first calls, one drawing
    assert drawn_after == length  # four more loops: no U-Net frame
    assert from_cache == 4 * length
    for loop in [*first, *again]:
        assert [f.data for f in loop] == [f.data for f in first[0]]


def test_the_loop_length_cap_and_a_zero_cache_budget(store: Path) -> None:
    async def body(stub, channel, servicer):
        before = unet_frames("loop3")
        loops = [await loop_of(stub, "loop3") for _ in range(2)]
        return loops, unet_frames("loop3") - before

    loops, drawn = run_with_server(body, settings(store, idle_loop_frames=6, idle_cache_mb=0))
    assert [f.source_frame for f in loops[0]] == [0, 1, 2, 3, 2, 1]
    assert drawn == 12  # nothing kept: each call draws its loop


@pytest.mark.parametrize(("request_fields", "code", "field"), [
    ({"avatar": "nobody"}, grpc.StatusCode.NOT_FOUND, "nobody"),
    ({"avatar": "../etc"}, grpc.StatusCode.INVALID_ARGUMENT, "avatar"),
    ({"avatar": "loop4", "jpeg_quality": 101}, grpc.StatusCode.INVALID_ARGUMENT, "jpeg_quality"),
    ({"avatar": "loop4", "feature_mode": "mel"}, grpc.StatusCode.INVALID_ARGUMENT, "feature_mode"),
    ({"avatar": "loop4", "feature_mode": "whisper"}, grpc.StatusCode.FAILED_PRECONDITION,
     "whisper"),
    ({"avatar": "loop4", "encoding": 7}, grpc.StatusCode.INVALID_ARGUMENT, "encoding"),
])
def test_bad_requests_get_their_status(store: Path, request_fields, code, field) -> None:
    async def body(stub, channel, servicer):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await loop_of(stub, **request_fields)
        ok = await loop_of(stub, "loop4")
        return caught.value, ok

    err, ok = run_with_server(body, settings(store))
    assert err.code() == code
    assert field in err.details()
    assert len(ok) == IdleLoopShape(5).length  # the server still works


def test_the_resident_pipeline_draws_the_same_loop(store: Path) -> None:
    """The device-resident path (on the CPU device here) pins the avatar while it draws and
    gives the same frames as the host path."""
    async def body(stub, channel, servicer):
        return await loop_of(stub, "loop4", encoding=RAW), servicer.runner.resident

    host, _ = run_with_server(body, settings(store))
    resident, is_resident = run_with_server(body, settings(store, resident="on"))
    assert is_resident
    assert [f.source_frame for f in resident] == [f.source_frame for f in host]
    for a, b in zip(host, resident, strict=True):
        diff = np.abs(decode_raw_rgb(a.data, a.width, a.height).astype(int)
                      - decode_raw_rgb(b.data, b.width, b.height).astype(int))
        assert diff.max() <= 1
