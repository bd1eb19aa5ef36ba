"""The extractor interface every feature mode implements.

Offline `extract` and the streaming state must give bit-identical frames for the same audio
and look-ahead trim, whatever the chunk sizes; each mode documents the look-ahead its windows
need (`lookahead_for(trim)`, see `synctalk.audio.windows` for the trim).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from synctalk.audio.mel_stream import MelStream
from synctalk.audio.pcm import SAMPLES_PER_FRAME
from synctalk.audio.windows import CONTEXT_AFTER, check_trim, frame_count, stack_context

Frame = tuple[int, np.ndarray]  # (video frame index, features of that frame)


class FeatureStream(ABC):
    """One stream's incremental state: frames come out in order, each once."""

    @abstractmethod
    def push(self, samples: np.ndarray) -> list[Frame]:
        """Add 16 kHz mono float samples; return the frames whose audio is now complete."""

    @abstractmethod
    def samples_wanted(self) -> int:
        """Stream samples that must have arrived before `push` can return another frame; a
        caller may hold smaller pieces back and push them together without delaying anything."""

    @abstractmethod
    def finish(self) -> list[Frame]:
        """End of input: return every remaining frame (ceil(samples / 640) in all)."""


class FeatureExtractor(ABC):
    """A feature mode: its per-frame tensor shape, look-ahead, offline and streaming paths."""

    name: str
    shape: tuple[int, ...]
    # Frames over which `samples_needed` repeats (its steady state): the look-ahead is the
    # worst case among them.
    lookahead_period: range

    @abstractmethod
    def samples_needed(self, i: int, trim: int = 0) -> int:
        """Stream samples that must have arrived before frame i can leave mid-stream."""

    @abstractmethod
    def feature_rows(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """One feature row per video frame of a whole mono float signal, [n_frames, ...]."""

    @abstractmethod
    def start_stream(self, trim: int = 0) -> FeatureStream:
        """A fresh streaming state."""

    def extract(self, audio: np.ndarray, trim: int = 0) -> np.ndarray:
        """Whole 16 kHz mono float signal -> float32 [ceil(len / 640), *shape]."""
        check_trim(trim)
        audio = as_mono_float(audio)
        n_frames = frame_count(audio.size)
        if n_frames == 0:
            return np.zeros((0, *self.shape), np.float32)
        rows = self.feature_rows(audio, n_frames)
        return np.stack([stack_context(rows, i, trim).reshape(self.shape)
                         for i in range(n_frames)])

    def lookahead_for(self, trim: int) -> int:
        """Worst-case audio needed past a frame's end, in whole 40 ms frames, when each frame's
        last `trim` context rows are left out."""
        check_trim(trim)
        worst = max(self.samples_needed(i, trim) - (i + 1) * SAMPLES_PER_FRAME
                    for i in self.lookahead_period)
        return -(-worst // SAMPLES_PER_FRAME)

    @property
    def lookahead_frames(self) -> int:
        return self.lookahead_for(0)

    def warmup(self) -> None:
        """Run the model once so the first real stream does not pay for lazy initialisation."""
        self.extract(np.zeros(16_000, np.float32))


def as_mono_float(samples: np.ndarray) -> np.ndarray:
    """Validate and flatten an input signal to float32 mono."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples of shape [n], got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected float samples, got {x.dtype}")
    return x.astype(np.float32, copy=False)


class MelFeatureStream(FeatureStream):
    """A stream over a `MelStream`: the push and finish bookkeeping every mode shares; the
    mode says which frames are ready (`_ready`) and how the end flushes the rest (`_flush`)."""

    def __init__(self, extractor: FeatureExtractor, trim: int, mel: MelStream) -> None:
        self.extractor = extractor
        self.trim = trim
        self.reach = CONTEXT_AFTER - trim  # the last row a frame reads, past its own
        self.mel = mel
        self.next_frame = 0
        self.done = False

    def push(self, samples: np.ndarray) -> list[Frame]:
        if self.done:
            raise RuntimeError("push after finish")
        self.mel.push(as_mono_float(samples.ravel()))
        return self._ready()

    def samples_wanted(self) -> int:
        return self.extractor.samples_needed(self.next_frame, self.trim)

    def finish(self) -> list[Frame]:
        if self.done:
            return []
        self.done = True
        self.mel.finish()
        return self._flush(frame_count(self.mel.n_samples))

    @abstractmethod
    def _ready(self) -> list[Frame]:
        """The frames the audio pushed so far completes."""

    @abstractmethod
    def _flush(self, n_frames: int) -> list[Frame]:
        """Every remaining frame of a stream of `n_frames`."""
