"""PCM conversions and resampling shared by every service (16 kHz mono is the project's rate)."""

from __future__ import annotations

import numpy as np
import soxr

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


def s16le_to_float(pcm: bytes) -> np.ndarray:
    """s16le bytes -> float32 in [-1, 1). Raises ValueError on an odd byte count."""
    if len(pcm) % 2:
        raise ValueError(f"odd byte count {len(pcm)} for 16-bit PCM")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_s16le(x: np.ndarray) -> bytes:
    """float in [-1, 1] -> s16le bytes, clipped."""
    y = np.clip(np.asarray(x, dtype=np.float32) * 32768.0, -32768, 32767)
    return np.round(y).astype("<i2").tobytes()


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of a mono float signal."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out or x.size == 0:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)
