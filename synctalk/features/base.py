"""The extractor interface every feature mode implements.

Offline `extract` and the streaming state must give bit-identical frames for the same audio,
whatever the chunk sizes; each mode documents the look-ahead its windows need.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

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
    lookahead_frames: int  # worst-case audio needed past a frame's end, in 40 ms frames

    @abstractmethod
    def extract(self, audio: np.ndarray) -> np.ndarray:
        """Whole 16 kHz mono float signal -> float32 [ceil(len / 640), *shape]."""

    @abstractmethod
    def start_stream(self) -> FeatureStream:
        """A fresh streaming state."""

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
