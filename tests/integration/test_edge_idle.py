"""Idling between utterances on a real stack on 127.0.0.1: the page's idle loop (GET /idle),
speech that starts from the idle frame shown (`start_frame`), and Animate calls that idle
at 25 frames/s between utterances, all at no U-Net cost once the loop is drawn (the
renderer's own frame counter)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.edge import stream_format
from synctalk.render.idle_loop import IdleLoopShape
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc
from tests.support.animate import LiveCall, audio_requests, config
from tests.support.audio import tone_pcm
from tests.support.stack import AVATAR, AVATAR_SIZE, Edge, Stack

SHAPE = IdleLoopShape(10)  # the stack's avatar has 10 frames


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge()



def unet_frames() -> float:
    return REGISTRY.get_sample_value("synctalk_renderer_frames_total", {"avatar": AVATAR}) or 0.0


def idle_loop(edge: Edge) -> list[tuple[dict, bytes]]:
    with edge.client() as client:
        reply = client.get("/idle", params={"avatar": AVATAR})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == stream_format.MEDIA_TYPE
    return stream_format.parse(reply.content)


def test_the_page_gets_the_loop_once_drawn_then_free(edge: Edge) -> None:
    first = idle_loop(edge)
    before = unet_frames()
    again = [idle_loop(edge) for _ in range(3)]
    assert unet_frames() == before  # served from the caches: no U-Net frame
    start, *frames, end = first
    assert start[0]["type"] == "start" and start[0]["loop_frames"] == SHAPE.length == 18
    assert (start[0]["width"], start[0]["height"]) == AVATAR_SIZE
    assert end[0] == {"type": "end", "status": "complete", "frames": 18}
    assert [h["source_frame"] for h, _ in frames] == [SHAPE.source(k) for k in range(18)]
    assert [h["next_start"] for h, _ in frames] == [SHAPE.start_after(k) for k in range(18)]
    assert all(h["idle"] and h["audio_bytes"] == 0 for h, _ in frames)
    assert all(p[:2] == b"\xff\xd8" and len(p) == h["image_bytes"] for h, p in frames)
    assert len({p for _, p in frames}) > 1  # the head moves
    assert all(loop == first for loop in again)


def test_an_unknown_avatar_has_no_loop(edge: Edge) -> None:
    with edge.client() as client:
        assert client.get("/idle", params={"avatar": "nobody"}).status_code == 404
        assert client.get("/idle", params={"avatar": "../x"}).status_code == 404
        assert client.get("/idle", params={"avatar": "x" * 65}).status_code == 422


@pytest.mark.parametrize("start", [0, 7, 9])
def test_speech_starts_at_the_start_frame_asked_for(edge: Edge, start: int) -> None:
    with edge.client() as client:
        reply = client.post("/generate", params={"format": "av", "start_frame": start},
                            json={"text": "Hello.", "avatar": AVATAR})
    assert reply.status_code == 200, reply.text
    frames = [h for h, _ in stream_format.parse(reply.content) if h["type"] == "frame"]
    walk = [h["source_frame"] for h in frames[:3]]
    assert walk[0] == start and abs(walk[1] - start) == 1


@pytest.mark.parametrize("start", ["10", "-1", "1e3", "x"])
def test_a_start_frame_outside_the_avatar_is_refused(edge: Edge, start: str) -> None:
    with edge.client() as client:
        reply = client.post(f"/generate?format=av&start_frame={start}",
                            json={"text": "Hello.", "avatar": AVATAR})
    assert reply.status_code == 422
    assert "start_frame" in reply.text


def idle_run(frames: list[avatar_pb2.AnimatedFrame], start: int) -> int:
    """How many frames from `start` on are idle-loop frames."""
    n = 0
    while start + n < len(frames) and frames[start + n].frame.idle \
            and frames[start + n].audio == bytes(1280):
        n += 1
    return n


def test_animate_idles_between_utterances_at_no_u_net_cost(
        stub: avatar_pb2_grpc.AvatarStub, edge: Edge) -> None:
    idle_loop(edge)  # drawn once, before the call
    call = LiveCall(stub, config(avatar=AVATAR, idle_between_utterances=True))
    before = unet_frames()
    call.wait_frames(25)
    assert unet_frames() == before  # a second of idling: no U-Net frame
    assert 0.025 <= float(np.median(np.diff(call.arrival[5:25]))) <= 0.06  # 25 frames/s
    pcm = tone_pcm(0.8)
    call.send(*audio_requests(pcm))
    call.wait_for(lambda: any(not f.frame.idle for f in call.frames))
    call.wait_for(lambda: idle_run(call.frames, len(call.frames) - 10) >= 10)  # idle again
    call.close()
    assert call.error is None, call.error
    frames = call.frames
    assert [f.frame.index for f in frames] == list(range(len(frames)))
    assert [f.frame.pts_ms for f in frames] == [40 * f.frame.index for f in frames]
    lead = idle_run(frames, 0)
    speech = frames[lead:]
    assert lead >= 25
    # Speech starts from the idle frame the call was on: one walk step, no jump.
    assert abs(speech[0].frame.source_frame - frames[lead - 1].frame.source_frame) == 1
    spoken = b"".join(f.audio for f in speech)
    assert spoken[: len(pcm)] == pcm  # every sample of what was said, in order
    tail = idle_run(frames, len(frames) - 10)
    assert tail == 10
    consecutive = [frames[k].frame.data != frames[k + 1].frame.data
                   for k in range(lead - 10, lead - 1)]
    assert any(consecutive)  # the idle head keeps moving
    assert all(f.session_id == frames[0].session_id for f in frames)


def test_without_the_option_a_quiet_call_sends_nothing(stub: avatar_pb2_grpc.AvatarStub) -> None:
    call = LiveCall(stub, config(avatar=AVATAR))
    time.sleep(0.6)
    assert call.frames == []
    call.send(*audio_requests(tone_pcm(0.2)))
    call.close()
    frames = call.frames
    assert len(frames) == 5 and not any(f.frame.idle and f.audio == bytes(1280) for f in frames)


def test_a_lower_jpeg_quality_fetches_a_smaller_loop(edge: Edge) -> None:
    with edge.client() as client:
        small = client.get("/idle", params={"avatar": AVATAR, "jpeg_quality": 20})
        bad = client.get("/idle", params={"avatar": AVATAR, "jpeg_quality": 101})
    assert small.status_code == 200 and bad.status_code == 422
    default = sum(len(p) for _, p in idle_loop(edge))
    frames = [h for h, _ in stream_format.parse(small.content) if h["type"] == "frame"]
    assert len(frames) == SHAPE.length
    assert sum(h["image_bytes"] for h in frames) < 0.8 * default


def speech_frames(frames: list[avatar_pb2.AnimatedFrame]) -> list[int]:
    """Indices of the frames that carry sound (what was said; idle frames carry silence)."""
    return [k for k, f in enumerate(frames) if f.audio != bytes(1280)]


def test_each_utterance_after_a_pause_follows_the_idle_frame(
        stub: avatar_pb2_grpc.AvatarStub) -> None:
    """Speech, idling, speech again: both utterances arrive whole (the pause ended the first,
    the second is a new one), each starting one walk step from the idle frame before it."""
    call = LiveCall(stub, config(avatar=AVATAR, idle_between_utterances=True))
    call.wait_frames(5)
    first, second = tone_pcm(0.6), tone_pcm(0.4, freq=330.0)
    starts = []
    for pcm in (first, second):
        before = len(call.frames)
        call.send(*audio_requests(pcm))
        call.wait_for(lambda b=before: any(k >= b for k in speech_frames(call.frames)))
        starts.append(next(k for k in speech_frames(call.frames) if k >= before))
        # Past the utterance's own tail and the 1 s pause rule: idling for a while.
        call.wait_for(lambda: len(call.frames) - speech_frames(call.frames)[-1] > 60)
    call.close()
    assert call.error is None, call.error
    frames = call.frames
    assert [f.frame.index for f in frames] == list(range(len(frames)))
    for k in starts:
        assert frames[k - 1].frame.idle and not frames[k].frame.idle
        assert abs(frames[k].frame.source_frame - frames[k - 1].frame.source_frame) == 1
    spoken = b"".join(frames[k].audio for k in speech_frames(frames))
    assert first in spoken and second in spoken
