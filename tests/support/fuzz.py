"""What the property-based fuzz modules share: the hypothesis settings (few examples,
generous deadlines, so each module stays well under a minute on a shared 2-core machine), the
hang limit of one decode, and WAVs whose headers lie."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(deadline=None, max_examples=40, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DECODE_LIMIT_S = 20.0  # one decode of a few KB must never take this long (a hang)


def lying_wav(rate: int, channels: int, bits: int, data_size: int, riff_size: int,
              chunks: list[tuple[bytes, int, int]], n: int) -> bytes:
    """A WAV whose header fields (and extra chunks: id, declared size, bytes present) say
    whatever they like; `n` bytes of noise follow as data."""
    block = max(1, channels * bits // 8)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF,
                      block & 0xFFFF, bits)
    extra = b"".join(cid + struct.pack("<I", size) + b"\x01" * present
                     for cid, size, present in chunks)
    data = np.random.default_rng(n).integers(0, 256, n, np.uint8).tobytes()
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + extra + b"data" + struct.pack("<I", data_size) + data)


U32 = st.integers(0, 0xFFFFFFFF)
LYING_WAVS = st.builds(
    lying_wav,
    rate=st.one_of(st.sampled_from([0, 1, 8000, 16000, 48000, 655_350, 4_000_000_000]), U32),
    channels=st.one_of(st.sampled_from([0, 1, 2, 8, 64, 255, 65535]), st.integers(0, 0xFFFF)),
    bits=st.sampled_from([0, 8, 16, 24, 32, 64]),
    data_size=st.one_of(st.sampled_from([0, 100, 0xFFFFFFFF]), U32),
    riff_size=U32,
    chunks=st.lists(st.tuples(st.sampled_from([b"LIST", b"fact", b"bext", b"iXML", b"id3 ",
                                               b"junk"]),
                              st.one_of(st.sampled_from([0, 1 << 30, 0xFFFFFFF0]), U32),
                              st.integers(0, 64)), max_size=3),
    n=st.integers(0, 4000),
)
