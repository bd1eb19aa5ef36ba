"""The source-frame walk: forward through the avatar's video, then back, then forward again,
so consecutive output frames are always neighbours in the source and the head never jumps."""

from __future__ import annotations


class PingPong:
    """Output frame i -> source frame: start, start+1, ..., N-1, N-2, ..., 1, 0, 1, ...

    `start` is a position in that walk (0 <= start < N), so a session can begin anywhere."""

    def __init__(self, num_frames: int, start: int = 0) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if not 0 <= start < num_frames:
            raise ValueError(f"start must be in [0, {num_frames - 1}], got {start}")
        self.num_frames = num_frames
        self.start = start
        self.period = max(1, 2 * (num_frames - 1))

    def index(self, i: int) -> int:
        """Source frame shown as output frame `i` (i >= 0)."""
        if self.num_frames == 1:
            return 0
        k = (self.start + i) % self.period
        return k if k < self.num_frames else self.period - k

    def __repr__(self) -> str:
        return f"PingPong(num_frames={self.num_frames}, start={self.start})"
