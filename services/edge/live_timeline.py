"""Where each sample of a live utterance came from: which input sample, arrived when.

The edge knows when every input sample arrived, so each frame can carry its `input_sample`
and edge lag, and a frame that comes back too late can be dropped (services/edge/live.py)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from services.edge.orchestrator import Frame, Utterance
from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME


@dataclass
class _Segment:
    """A run of the utterance's timeline: input audio (from `input_start`) or padding."""

    start: int  # timeline sample
    length: int
    input_start: int | None
    arrived: float  # monotonic time its last sample arrived


class Timeline:
    """Which input sample, arrived when, each timeline sample of the utterance holds."""

    def __init__(self) -> None:
        self.segments: deque[_Segment] = deque()
        self.samples = 0

    def add(self, length: int, input_start: int | None, arrived: float) -> None:
        if length:
            self.segments.append(_Segment(self.samples, length, input_start, arrived))
            self.samples += length

    def locate(self, sample: int) -> tuple[int | None, float]:
        """(input sample, arrival time) of timeline `sample`; earlier segments are forgotten."""
        while len(self.segments) > 1 and self.segments[0].start + self.segments[0].length <= sample:
            self.segments.popleft()
        if not self.segments:
            return None, time.monotonic()
        seg = self.segments[0]
        offset = min(max(sample - seg.start, 0), seg.length - 1)
        arrived = seg.arrived - (seg.length - 1 - offset) / SAMPLE_RATE
        return (None if seg.input_start is None else seg.input_start + offset), arrived


class Run:
    """One utterance of the session, with its frames and its timeline."""

    def __init__(self, utterance: Utterance, frames: AsyncGenerator[Frame, None]) -> None:
        self.utterance = utterance
        self.frames = frames
        self.timeline = Timeline()
        self.rendered = 0  # frames back from the renderer
        self.replaced = False

    @property
    def behind(self) -> int:
        """Frames the renderer could have made by now (their look-ahead is in) but has not."""
        ready = self.timeline.samples // SAMPLES_PER_FRAME - self.utterance.config.lookahead_frames
        return ready - self.rendered

    @property
    def unsent(self) -> int:
        return -(-self.timeline.samples // SAMPLES_PER_FRAME) - self.rendered

    def feed(self, pcm: bytes, input_start: int, arrived: float) -> None:
        """Input audio, from input sample `input_start`, into the utterance."""
        self.timeline.add(len(pcm) // 2, input_start, arrived)
        self.utterance.send_audio(pcm)

    def pad(self, now: float) -> None:
        """Silence up to a frame boundary plus the look-ahead and two frames, so the frames
        the look-ahead holds back come out (Animate's tail flush)."""
        frames = self.utterance.config.lookahead_frames + 2
        length = (-self.timeline.samples) % SAMPLES_PER_FRAME + frames * SAMPLES_PER_FRAME
        self.timeline.add(length, None, now)
        self.utterance.send_audio(b"\0" * 2 * length)
