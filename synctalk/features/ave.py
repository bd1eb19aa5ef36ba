"""`ave` mode: SyncTalk_2D's audio-visual encoder over Wav2Lip mel windows.

Per video frame i the output is float32 [32, 16, 16]: feature rows i-8 .. i+7 (512 values
each, zeros outside [0, F)) in row-major order; the row and window arithmetic is in
`synctalk.audio.windows`. The encoder always runs on batches of G = `runner.group` windows
with a fixed composition (window j sits at position j % G of group j // G; empty positions
are zeros), because conv results for one window change with the batch it is computed in. A
stream that needs window j before its group is complete computes the group early with the
missing positions zeroed, and gets the very numbers the offline pass gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from synctalk.audio.mel import wav2lip_mel
from synctalk.audio.mel_stream import MelStream
from synctalk.audio.windows import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    CONTEXT_ROWS,
    MEL_WINDOW,
    check_trim,
    clamped_window_start,
    context_rows,
    frame_count,
    row_window,
    window_start,
)
from synctalk.features.ave_runners import EncoderRunner
from synctalk.features.base import FeatureExtractor, Frame, MelFeatureStream
from synctalk.models.audio_encoder import FEATURE_DIM

SHAPE = (32, 16, 16)
MEL_FLOOR = -4.0  # normalised silence; fills a window only when the whole stream is < 16 mel frames


def first_clamped_window(n_mel: int) -> int:
    """The first window whose start is pinned to the last 16 mel frames; later ones equal it."""
    j = max(0, int((n_mel - MEL_WINDOW) * 25 / 80) - 2)
    while window_start(j) < n_mel - MEL_WINDOW:
        j += 1
    return j


def samples_needed(i: int, trim: int = 0) -> int:
    """Samples that must have arrived before frame i can be emitted mid-stream: its last row
    is window i+6-trim, whose last mel frame reaches 400 samples (half the STFT) past its
    centre."""
    return (window_start(row_window(i + CONTEXT_AFTER - trim)) + MEL_WINDOW - 1) * 200 + 400


class AveExtractor(FeatureExtractor):
    name = "ave"
    shape = SHAPE
    lookahead_period = range(10, 15)  # int(3.2 j) repeats every 5 frames

    def __init__(self, runner: EncoderRunner) -> None:
        self.runner = runner

    def samples_needed(self, i: int, trim: int = 0) -> int:
        return samples_needed(i, trim)

    def encode(
        self, wanted: Iterable[int], window: Callable[[int], np.ndarray | None]
    ) -> dict[int, np.ndarray]:
        """Encode the groups holding `wanted` windows; `window(j)` is j's [80, 16] mel or None
        where j is not available. Every available window of a touched group is returned."""
        size = self.runner.group
        out: dict[int, np.ndarray] = {}
        for g in sorted({j // size for j in wanted}):
            batch = np.zeros((size, 80, MEL_WINDOW), np.float32)
            present = []
            for p in range(size):
                w = window(g * size + p)
                if w is not None:
                    batch[p] = w
                    present.append(p)
            vectors = self.runner.encode_group(batch)
            out.update({g * size + p: vectors[p] for p in present})
        return out

    def feature_rows(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        mel = wav2lip_mel(audio)
        n_mel = mel.shape[0]
        last = min(row_window(n_frames - 1), first_clamped_window(n_mel))
        vectors = self.encode(
            range(last + 1),
            lambda j: mel_window(mel, clamped_window_start(j, n_mel)) if j <= last else None,
        )
        return np.stack([vectors[min(row_window(r), last)] for r in range(n_frames)])

    def start_stream(self, trim: int = 0) -> AveStream:
        return AveStream(self, check_trim(trim))


def mel_window(mel: np.ndarray, start: int) -> np.ndarray:
    """mel[start : start+16] as [80, 16]; rows past the end (streams < 16 mel frames) = -4."""
    w = np.full((MEL_WINDOW, mel.shape[1]), MEL_FLOOR, np.float32)
    part = mel[start : start + MEL_WINDOW]
    w[: part.shape[0]] = part
    return w.T


class AveStream(MelFeatureStream):
    """Frame i leaves once window i+6-trim is final (`samples_needed(i, trim)`); the last
    frames, whose windows read the reflect padding at the end or are clamped, leave on
    `finish`."""

    extractor: AveExtractor

    def __init__(self, extractor: AveExtractor, trim: int = 0) -> None:
        super().__init__(extractor, trim, MelStream.wav2lip())
        self.vectors: dict[int, np.ndarray] = {}
        self.oldest = 0  # windows below this are forgotten (their mel is gone)

    def _ready(self) -> list[Frame]:
        ready = self.mel.ready
        i = self.next_frame
        known_frames = frame_count(self.mel.n_samples)
        while (window_start(row_window(i + self.reach)) + MEL_WINDOW <= ready
               and i + self.reach + 1 <= known_frames):
            i += 1
        return self._emit(range(self.next_frame, i), n_frames=None)

    def _flush(self, n_frames: int) -> list[Frame]:
        return self._emit(range(self.next_frame, n_frames), n_frames=n_frames)

    def _emit(self, frames: range, n_frames: int | None) -> list[Frame]:
        if not frames:
            return []
        n_mel = self.mel.ready  # T_mel once finished
        # After finish: the last window any row reads (clamped windows all share it).
        last = (
            min(row_window(n_frames - 1), first_clamped_window(n_mel))
            if n_frames is not None
            else None
        )

        def rep(r: int) -> int:
            j = row_window(r)
            return j if last is None else min(j, last)

        def available(j: int) -> np.ndarray | None:
            if j < self.oldest:
                return None
            if last is not None:
                if j > last:
                    return None
                return mel_window(self._mel(clamped_window_start(j, n_mel), n_mel), 0)
            start = window_start(j)
            if start + MEL_WINDOW > self.mel.ready:
                return None
            return mel_window(self.mel.get(start, start + MEL_WINDOW), 0)

        limit = n_frames if n_frames is not None else frames[-1] + CONTEXT_AFTER + 1 - self.trim
        wanted = {rep(r) for i in frames for r in context_rows(i, self.trim) if 0 <= r < limit}
        missing = wanted - self.vectors.keys()
        if missing:
            self.vectors.update(self.extractor.encode(missing, available))

        out: list[Frame] = []
        for i in frames:
            x = np.zeros((CONTEXT_ROWS, FEATURE_DIM), np.float32)
            for k, r in enumerate(context_rows(i, self.trim)):
                if 0 <= r < limit:
                    x[k] = self.vectors[rep(r)]
            out.append((i, x.reshape(SHAPE)))
        self.next_frame = frames[-1] + 1
        self._forget()
        return out

    def _mel(self, start: int, n_mel: int) -> np.ndarray:
        return self.mel.get(start, min(start + MEL_WINDOW, n_mel))

    def _forget(self) -> None:
        """Drop windows and mel frames no later frame can read."""
        self.oldest = max(self.next_frame - CONTEXT_BEFORE - 1, 0)
        for j in [j for j in self.vectors if j < self.oldest]:
            del self.vectors[j]
        if not self.done:
            self.mel.discard_before(window_start(self.oldest))
