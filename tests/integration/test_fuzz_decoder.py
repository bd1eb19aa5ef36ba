"""Property-based fuzzing (issue 8 §3, issue 20) of the audio decoder, the code that takes
untrusted files: arbitrary and mutated bytes, float WAVs that spell NaN and infinity, and WAV
headers that lie about sizes, rates and channels (decoded within the time and memory budget).

Each property either holds or the input is refused with the documented error, never
another exception and never a hang.
"""

from __future__ import annotations

import io
import math
import time
import wave

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from synctalk.audio.decode import AudioDecodeError, load_audio
from synctalk.audio.pcm import SAMPLE_RATE
from tests.support.fuzz import DECODE_LIMIT_S, FUZZ, LYING_WAVS

DECODE_FUZZ = settings(FUZZ, max_examples=150)  # cheap per example, and the riskiest input


# -- any bytes and mutated files -------------------------------------------------------------


def wav(rate: int, channels: int, width: int, n: int, seed: int = 0) -> bytes:
    """A small PCM WAV of noise (any rate, channel count, sample width)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, n * channels * width, dtype=np.uint8).tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return out.getvalue()


def float_wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """A 32-bit IEEE float WAV: the format whose data bytes can spell NaN and infinity."""
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="FLOAT")
    return out.getvalue()


def assert_decodes_or_refuses(data: bytes) -> np.ndarray | None:
    """load_audio either gives float32 mono finite samples or raises AudioDecodeError."""
    started = time.monotonic()
    try:
        out = load_audio(data, max_seconds=30)
    except AudioDecodeError:
        out = None
    assert time.monotonic() - started < DECODE_LIMIT_S
    if out is not None:
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.float32 and out.ndim == 1 and out.size > 0
        assert np.isfinite(out).all()
    return out


@DECODE_FUZZ
@given(st.binary(max_size=4096))
def test_decoder_on_arbitrary_bytes(data: bytes) -> None:
    assert_decodes_or_refuses(data)


@DECODE_FUZZ
@given(
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    channels=st.integers(1, 3),
    width=st.sampled_from([1, 2, 3, 4]),
    n=st.integers(1, 2000),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 20_000)),
)
def test_decoder_on_mutated_wavs(rate: int, channels: int, width: int, n: int,
                                 edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(wav(rate, channels, width, n))
    for pos, value in edits:  # header bytes included: sizes, rates, formats, widths
        data[pos % len(data)] = value
    if cut is not None:
        data = data[:cut]
    out = assert_decodes_or_refuses(bytes(data))
    if not edits and cut is None and n >= 2:  # untouched: every sample there, at 16 kHz
        assert out is not None
        assert abs(out.size - n * SAMPLE_RATE / rate) <= 2 + SAMPLE_RATE / rate


@FUZZ
@given(st.lists(st.sampled_from([0.0, 0.5, -1.0, math.nan, math.inf, -math.inf, 1e30]),
                min_size=1, max_size=64),
       st.sampled_from([16000, 44100]))
def test_decoder_never_returns_nan_or_infinity(values: list[float], rate: int) -> None:
    """A float WAV carries any 32-bit pattern; what comes back must still be finite."""
    samples = np.resize(np.asarray(values, np.float32), 800)
    assert_decodes_or_refuses(float_wav(samples, rate))


# -- lying containers, decoded within the budget --------------------------------------------


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@FUZZ
@given(LYING_WAVS)
def test_lying_wav_headers_cost_no_more_than_the_budget(data: bytes) -> None:
    """Whatever the header claims (rates to 4 GHz, 65535 channels, chunks of 4 GB), the
    decode stays within its budget: it answers in time and the process's peak memory does
    not jump by what the header claimed."""
    from synctalk.audio.decode import limit_ffmpeg_allocations

    assert limit_ffmpeg_allocations()
    before = peak_rss_bytes()
    started = time.monotonic()
    try:
        out = load_audio(data, max_seconds=30, max_samples=30 * 192_000)
    except AudioDecodeError:
        out = None
    assert time.monotonic() - started < DECODE_LIMIT_S
    assert peak_rss_bytes() - before < 200 * 1024 * 1024
    if out is not None:
        assert out.dtype == np.float32 and out.size <= 31 * SAMPLE_RATE
        assert np.isfinite(out).all()
