"""A growing sample buffer addressed by absolute stream position, trimmed from the front,
so a long stream keeps only the samples its pending frames still need."""

from __future__ import annotations

import numpy as np


class SampleBuffer:
    """Samples [start, end) of a stream; reads outside what is held come back as zeros."""

    def __init__(self, dtype: type = np.float64, start: int = 0) -> None:
        self._data = np.zeros(4096, dtype=dtype)
        self._start = start  # stream position of _data[0]
        self._len = 0

    @property
    def start(self) -> int:
        return self._start

    @property
    def end(self) -> int:
        """Stream position one past the last sample held."""
        return self._start + self._len

    def append(self, samples: np.ndarray) -> None:
        n = samples.size
        if self._len + n > self._data.size:
            grown = np.zeros(max(2 * self._data.size, self._len + n), dtype=self._data.dtype)
            grown[: self._len] = self._data[: self._len]
            self._data = grown
        self._data[self._len : self._len + n] = samples
        self._len += n

    def read(self, start: int, stop: int) -> np.ndarray:
        """A copy of stream samples [start, stop), zeros where nothing is held."""
        out = np.zeros(max(stop - start, 0), dtype=self._data.dtype)
        lo, hi = max(start, self._start), min(stop, self.end)
        if hi > lo:
            out[lo - start : hi - start] = self._data[lo - self._start : hi - self._start]
        return out

    def discard_before(self, position: int) -> None:
        """Forget samples before `position` (kept capacity is reused)."""
        drop = min(max(position - self._start, 0), self._len)
        if drop == 0:
            return
        self._data[: self._len - drop] = self._data[drop : self._len]
        self._len -= drop
        self._start += drop
