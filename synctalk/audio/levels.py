"""Per-video-frame loudness: rms of the frame's 640 samples and a `voiced` flag, which the
renderer's idle rule reads (a silent frame shows the closed-mouth avatar)."""

from __future__ import annotations

import numpy as np

from synctalk.audio.buffer import SampleBuffer
from synctalk.audio.pcm import SAMPLES_PER_FRAME
from synctalk.audio.windows import frame_count

# A frame is voiced when the rms of its 640 samples exceeds 0.01 of full scale (-40 dBFS):
# speech from piper sits near -20 dBFS, room noise and dither stay well below.
VOICED_RMS = 0.01


def frame_rms(samples: np.ndarray) -> float:
    """Root mean square over 640 samples (a short last frame counts the rest as silence)."""
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.dot(x, x) / SAMPLES_PER_FRAME)) if x.size else 0.0


def is_voiced(rms: float) -> bool:
    return rms > VOICED_RMS


def frame_levels(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rms [F] float32, voiced [F] bool) for every video frame of a whole signal."""
    rms = [
        frame_rms(audio[i * SAMPLES_PER_FRAME : (i + 1) * SAMPLES_PER_FRAME])
        for i in range(frame_count(audio.size))
    ]
    return np.asarray(rms, np.float32), np.asarray([is_voiced(r) for r in rms], bool)


class LevelMeter:
    """The same levels for a stream: frame i's rms is known once its 640 samples are in."""

    def __init__(self) -> None:
        self._buffer = SampleBuffer()
        self._levels: dict[int, float] = {}
        self._next = 0

    def push(self, samples: np.ndarray) -> None:
        self._buffer.append(np.asarray(samples, dtype=np.float64))
        while (self._next + 1) * SAMPLES_PER_FRAME <= self._buffer.end:
            self._take()

    def finish(self) -> None:
        if self._next * SAMPLES_PER_FRAME < self._buffer.end:
            self._take()

    def pop(self, i: int) -> float:
        """Frame i's rms (each frame is asked for once)."""
        return self._levels.pop(i)

    def _take(self) -> None:
        start = self._next * SAMPLES_PER_FRAME
        stop = min(start + SAMPLES_PER_FRAME, self._buffer.end)
        self._levels[self._next] = frame_rms(self._buffer.read(start, stop))
        self._next += 1
        self._buffer.discard_before(self._next * SAMPLES_PER_FRAME)
