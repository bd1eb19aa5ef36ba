"""Log-mel front ends in pure NumPy: the Wav2Lip mel (AVE mode) and the Whisper log-mel.

Every mel frame is computed inside a fixed block of `BLOCK` frames aligned to absolute
frame indices (block k = frames [k*BLOCK, (k+1)*BLOCK)), always with the same array shapes.
FFT and BLAS results for one row can change with the number of rows in the call, so this
is what makes a frame's value independent of how the audio was chunked: a stream that
computes a block early (rows past the known audio filled with zeros, then discarded) gets
exactly the numbers the offline pass gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from synctalk.audio.pcm import SAMPLE_RATE

BLOCK = 32  # mel frames per fixed compute block

# Reads signal[start:stop) in the padded coordinates of a MelSpec (negative start allowed).
SignalReader = Callable[[int, int], np.ndarray]


# Slaney's mel scale (librosa's default, htk=False): Hz per mel on the linear part, where
# the log part starts (in Hz and in mels), and the log part's step per mel.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    safe = np.maximum(hz, _MIN_LOG_HZ)
    return np.where(hz >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(safe / _MIN_LOG_HZ) / _LOGSTEP,
                    linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(
        mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel
    )


def mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-normalised triangular mel filters [n_mels, n_fft//2 + 1] (float64), as librosa's."""
    fmax = sr / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    mel_pts = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels])
    return weights * enorm[:, None]


def hann(n: int) -> np.ndarray:
    """Periodic Hann window (scipy `get_window('hann', n)`, torch `hann_window(n)`)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


@dataclass(frozen=True)
class MelSpec:
    """One mel front end: STFT framing, filterbank and the per-frame scale applied after it."""

    n_fft: int
    hop: int
    n_mels: int
    fmin: float
    fmax: float
    power: float  # 1 = magnitude (Wav2Lip), 2 = power (Whisper)
    scale: Callable[[np.ndarray], np.ndarray] = field(compare=False)

    @property
    def pad(self) -> int:
        """center=True: frame t is centred on sample t*hop."""
        return self.n_fft // 2

    @property
    def block_samples(self) -> int:
        return (BLOCK - 1) * self.hop + self.n_fft

    def frame_span(self, t: int) -> tuple[int, int]:
        """Stream samples [start, stop) that mel frame t reads (before padding rules)."""
        return t * self.hop - self.pad, t * self.hop + self.pad

    def compute_block(self, segment: np.ndarray) -> np.ndarray:
        """[block_samples] padded signal of one aligned block -> [BLOCK, n_mels] float32."""
        if segment.shape != (self.block_samples,):
            raise ValueError(f"block segment must have {self.block_samples} samples")
        frames = np.lib.stride_tricks.sliding_window_view(segment, self.n_fft)[:: self.hop]
        spec = np.abs(np.fft.rfft(frames * _window(self.n_fft), axis=-1))
        if self.power != 1:
            spec = spec**self.power
        cols, weights, starts = _sparse_filters(self)
        mel = np.add.reduceat(spec[:, cols] * weights, starts, axis=1)
        return self.scale(mel).astype(np.float32)

    def frames(self, read: SignalReader, t0: int, t1: int) -> np.ndarray:
        """Mel frames [t0, t1) -> [t1 - t0, n_mels], block by aligned block.

        `read(a, b)` gives the padded signal for stream samples [a, b); samples it does not
        know yet must be zeros (only rows whose samples are all known are meaningful).
        """
        if t1 <= t0:
            return np.zeros((0, self.n_mels), np.float32)
        out = []
        for k in range(t0 // BLOCK, (t1 - 1) // BLOCK + 1):
            start = k * BLOCK * self.hop - self.pad
            block = self.compute_block(read(start, start + self.block_samples))
            lo = max(t0 - k * BLOCK, 0)
            hi = min(t1 - k * BLOCK, BLOCK)
            out.append(block[lo:hi])
        return np.concatenate(out)


@lru_cache(maxsize=8)
def _window(n: int) -> np.ndarray:
    return hann(n)


@lru_cache(maxsize=8)
def _sparse_filters(spec: MelSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The filterbank as (bin indices, weights, band starts) over each band's support.

    Applied with a gather and `np.add.reduceat` instead of a BLAS matmul: 40x fewer
    multiplications, and no BLAS thread pool waking up beside torch's (on 2 cores OpenBLAS
    and torch threads spinning against each other made streaming 10x slower).
    """
    fb = mel_filterbank(SAMPLE_RATE, spec.n_fft, spec.n_mels, spec.fmin, spec.fmax)
    cols: list[int] = []
    weights: list[float] = []
    starts: list[int] = []
    for band in fb:
        support = np.flatnonzero(band)
        lo, hi = (support[0], support[-1] + 1) if support.size else (0, 1)
        starts.append(len(cols))
        cols.extend(range(lo, hi))
        weights.extend(band[lo:hi])
    return np.array(cols), np.array(weights), np.array(starts)


def _wav2lip_scale(mel: np.ndarray) -> np.ndarray:
    """20*log10(max(1e-5, x)) - 20 dB, then clip(8*(S+100)/100 - 4, -4, 4)."""
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0)


def _log10_scale(mel: np.ndarray) -> np.ndarray:
    """Whisper's log10 with a 1e-10 floor; the window-wise range clamp comes later."""
    return np.log10(np.maximum(mel, 1e-10))


# SyncTalk_2D / Wav2Lip hparams: 80 mel frames per second.
WAV2LIP = MelSpec(n_fft=800, hop=200, n_mels=80, fmin=55.0, fmax=7600.0, power=1.0,
                  scale=_wav2lip_scale)
# Whisper: 100 mel frames per second.
WHISPER = MelSpec(n_fft=400, hop=160, n_mels=80, fmin=0.0, fmax=8000.0, power=2.0,
                  scale=_log10_scale)

PREEMPHASIS = 0.97


def preemphasis(x: np.ndarray, previous: float = 0.0) -> np.ndarray:
    """y[n] = x[n] - 0.97 x[n-1] (float64); `previous` is the sample before x[0] (0 at the start)."""
    x = np.asarray(x, dtype=np.float64)
    y = x.copy()
    if x.size:
        y[0] -= PREEMPHASIS * previous
        y[1:] -= PREEMPHASIS * x[:-1]
    return y


def wav2lip_frame_count(n_samples: int) -> int:
    """T_mel = floor(L / 200) + 1 (librosa center=True)."""
    return n_samples // WAV2LIP.hop + 1


def wav2lip_mel(audio: np.ndarray) -> np.ndarray:
    """The whole-file Wav2Lip log-mel [T_mel, 80] in [-4, 4] of 16 kHz mono audio.

    Pre-emphasis, then reflect padding of n_fft/2 at both ends (librosa center=True with
    pad_mode="reflect"), Hann STFT magnitude, Slaney mel 55-7600 Hz, dB, symmetric norm.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError("wav2lip_mel needs a non-empty mono signal")
    padded = np.pad(preemphasis(audio), WAV2LIP.pad, mode="reflect")
    return WAV2LIP.frames(padded_reader(padded, WAV2LIP.pad), 0, wav2lip_frame_count(audio.size))


def whisper_log_mel(audio: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """Whisper log10-mel frames [t0, t1) of a stream that is silent outside the audio.

    Frame t is centred on sample 160*t; samples before 0 and past the end read as zeros, so
    any frame index (negative too) is defined.
    """
    audio = np.asarray(audio, dtype=np.float64)
    return WHISPER.frames(zero_padded_reader(audio), t0, t1)


def padded_reader(padded: np.ndarray, pad: int) -> SignalReader:
    """Reader over an already padded array whose index `pad` is stream sample 0; zeros outside."""

    def read(start: int, stop: int) -> np.ndarray:
        return _slice_with_zeros(padded, start + pad, stop + pad)

    return read


def zero_padded_reader(signal: np.ndarray) -> SignalReader:
    """Reader over a signal that is silent before sample 0 and after its end."""

    def read(start: int, stop: int) -> np.ndarray:
        return _slice_with_zeros(signal, start, stop)

    return read


def _slice_with_zeros(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    out = np.zeros(stop - start, dtype=np.float64)
    lo, hi = max(start, 0), min(stop, x.size)
    if hi > lo:
        out[lo - start : hi - start] = x[lo:hi]
    return out
