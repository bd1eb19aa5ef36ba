"""The idle loop's geometry: the walk it shows, and hand-overs between speech and idling that
never jump more than one source frame (inside the loop)."""

from __future__ import annotations

import pytest

from synctalk.avatar import PingPong
from synctalk.render.idle_loop import IdleLoopShape


@pytest.mark.parametrize(("num_frames", "cap", "sources", "length"), [
    (1, 500, 1, 1), (2, 500, 2, 2), (250, 500, 250, 498), (3000, 500, 251, 500),
    (12, 6, 4, 6), (12, 7, 4, 6),
])
def test_sources_and_length(num_frames: int, cap: int, sources: int, length: int) -> None:
    shape = IdleLoopShape(num_frames, cap)
    assert (shape.sources, shape.length) == (sources, length)
    assert shape.length <= cap or num_frames == 1


@pytest.mark.parametrize("num_frames", [2, 3, 12, 250])
def test_the_loop_is_the_renderers_ping_pong_walk(num_frames: int) -> None:
    shape = IdleLoopShape(num_frames)
    walk = PingPong(num_frames, 0)
    assert [shape.source(k) for k in range(3 * shape.length)] == \
        [walk.index(k) for k in range(3 * shape.length)]


@pytest.mark.parametrize(("num_frames", "cap"), [(1, 500), (2, 500), (5, 500), (12, 6), (40, 20)])
def test_speech_starts_next_to_the_idle_frame_and_idling_resumes_next_to_speech(
        num_frames: int, cap: int) -> None:
    shape = IdleLoopShape(num_frames, cap)
    for position in range(shape.length):
        start = shape.start_after(position)
        assert 0 <= start < num_frames
        assert abs(start - shape.source(position)) <= 1
        assert start == shape.source(position + 1)  # the frame idling would have shown next
    for last in range(num_frames):
        resumed = shape.source(shape.resume_after(last))
        if last < shape.sources:
            assert abs(resumed - last) == (1 if num_frames > 1 else 0)
        else:
            assert resumed == shape.sources - 1  # beyond the loop: its far end


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        IdleLoopShape(0)
    with pytest.raises(ValueError, match="max_frames"):
        IdleLoopShape(10, 1)
