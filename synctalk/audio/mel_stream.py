"""Mel frames of a stream that arrives in pieces, bit-identical to the whole-file functions.

A frame is *final* once every sample it reads has arrived and none of them is produced by
the padding at the (still unknown) end. Final frames are computed in the same aligned
blocks as `synctalk.audio.mel` uses offline, so they carry the same numbers.
"""

from __future__ import annotations

import numpy as np

from synctalk.audio.buffer import SampleBuffer
from synctalk.audio.mel import BLOCK, WAV2LIP, WHISPER, MelSpec, padded_reader, preemphasis

UNBOUNDED = 1 << 62


class MelStream:
    """Incremental mel of one stream.

    `reflect=True` is the Wav2Lip front end (pre-emphasis, reflect padding at both ends,
    frames 0 .. floor(L/hop)); `reflect=False` treats the stream as silent outside
    [0, L) (the Whisper front end here), so any frame index >= `first_frame` exists.
    """

    def __init__(self, spec: MelSpec, *, reflect: bool, first_frame: int = 0) -> None:
        self.spec = spec
        self.reflect = reflect
        self.first_frame = first_frame
        self._signal = SampleBuffer()
        self._head = np.zeros(0)  # the first pad+1 samples, kept for the front reflection
        self._last = 0.0  # previous raw sample, for pre-emphasis across chunks
        self._finished = False
        self._whole: np.ndarray | None = None  # padded whole signal of a very short stream
        self._rows = np.zeros((0, spec.n_mels), np.float32)  # cached final frames
        self._rows_start = first_frame

    @classmethod
    def wav2lip(cls) -> MelStream:
        return cls(WAV2LIP, reflect=True)

    @classmethod
    def whisper(cls, first_frame: int) -> MelStream:
        return cls(WHISPER, reflect=False, first_frame=first_frame)

    @property
    def n_samples(self) -> int:
        return self._signal.end

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def ready(self) -> int:
        """Frames [first_frame, ready) are final."""
        n, hop, pad = self.n_samples, self.spec.hop, self.spec.pad
        if self._finished:
            return n // hop + 1 if self.reflect else UNBOUNDED
        if self.reflect and n <= pad:  # frame 0's front reflection reads sample `pad`
            return 0
        return max((n - pad) // hop + 1, self.first_frame)

    def push(self, samples: np.ndarray) -> None:
        if self._finished:
            raise RuntimeError("push after finish")
        x = np.asarray(samples, dtype=np.float64).ravel()
        if x.size == 0:
            return
        if self.reflect:
            y = preemphasis(x, self._last)
            self._last = float(x[-1])
            need = self.spec.pad + 1 - self._head.size
            if need > 0:
                self._head = np.concatenate([self._head, y[:need]])
        else:
            y = x
        self._signal.append(y)

    def finish(self) -> None:
        """The stream ended: frames that read the end padding become final."""
        self._finished = True
        if self.reflect and self.n_samples <= self.spec.pad:
            # Nothing was final yet, so nothing was trimmed: pad the whole signal like offline.
            whole = self._signal.read(0, self.n_samples)
            self._whole = np.pad(whole, self.spec.pad, mode="reflect") if whole.size else None

    def get(self, t0: int, t1: int) -> np.ndarray:
        """Final frames [t0, t1) as [t1 - t0, n_mels] float32."""
        if t0 < self._rows_start or t1 > self.ready:
            raise ValueError(f"mel frames [{t0}, {t1}) not available "
                             f"(held from {self._rows_start}, final below {self.ready})")
        end = self._rows_start + self._rows.shape[0]
        if t1 > end:
            self._compute(end, t1)
        return self._rows[t0 - self._rows_start : t1 - self._rows_start]

    def discard_before(self, t: int) -> None:
        """Frames before t will not be asked for again: free them and their samples."""
        drop = min(max(t - self._rows_start, 0), self._rows.shape[0])
        if drop:
            self._rows = self._rows[drop:]
            self._rows_start += drop
        block_start = (self._rows_start + self._rows.shape[0]) // BLOCK * BLOCK
        self._signal.discard_before(min(block_start * self.spec.hop - self.spec.pad,
                                        self.n_samples - self.spec.n_fft))

    def _compute(self, t0: int, t1: int) -> None:
        self._rows = np.concatenate([self._rows, self.spec.frames(self._read, t0, t1)])

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._whole is not None:
            return padded_reader(self._whole, self.spec.pad)(start, stop)
        out = self._signal.read(start, stop)
        if not self.reflect:
            return out
        n, pad = self.n_samples, self.spec.pad
        pos = np.arange(start, stop)
        front = (pos < 0) & (pos >= -pad)
        if front.any():
            out[front] = self._head[-pos[front]]
        if self._finished:
            back = (pos >= n) & (pos < n + pad)
            if back.any():
                out[back] = self._signal.read(n - pad - 1, n)[pad - 1 - (pos[back] - n)]
        return out
