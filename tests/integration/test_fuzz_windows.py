"""Property-based fuzzing (issue 8 §3) of the streaming mel and feature windowing: any split of
the audio into chunks gives the windows the offline pass gives, and frame counts follow the
duration.

Each property either holds or the input is refused with the documented error, never
another exception and never a hang.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from synctalk.audio.mel import wav2lip_mel, whisper_log_mel
from synctalk.audio.mel_stream import MelStream
from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME
from synctalk.audio.windows import frame_count
from synctalk.config import ModelsConfig
from synctalk.features import get_extractor
from tests.support.features import drain, signal, stream_in_chunks
from tests.support.fuzz import FUZZ


def random_splits(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, stop) pieces of range(n) cut at the given (unordered, repeated) positions."""
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(zip(points[:-1], points[1:], strict=True))


@FUZZ
@given(n=st.integers(1, 12_000), cuts=st.lists(st.integers(0, 12_000), max_size=12),
       seed=st.integers(0, 2**16))
def test_wav2lip_mel_stream_equals_offline_for_any_split(n: int, cuts: list[int],
                                                          seed: int) -> None:
    x = signal(n, seed)
    stream, got, done = MelStream.wav2lip(), [], 0
    for a, b in random_splits(n, cuts):
        stream.push(x[a:b])
        done = drain(stream, got, done, stream.ready)
    stream.finish()
    drain(stream, got, done, stream.ready)
    offline = wav2lip_mel(x)
    assert offline.shape[0] == n // 200 + 1
    assert np.array_equal(np.concatenate(got), offline)


@FUZZ
@given(n=st.integers(1, 8_000), cuts=st.lists(st.integers(0, 8_000), max_size=12),
       seed=st.integers(0, 2**16), first=st.integers(-96, 0))
def test_whisper_mel_stream_equals_offline_for_any_split(n: int, cuts: list[int], seed: int,
                                                          first: int) -> None:
    x = signal(n, seed)
    stop = n // 160 + 20
    stream, got, done = MelStream.whisper(first), [], first
    for a, b in random_splits(n, cuts):
        stream.push(x[a:b])
        done = drain(stream, got, done, min(stream.ready, stop))
    stream.finish()
    drain(stream, got, done, stop)
    assert np.array_equal(np.concatenate(got), whisper_log_mel(x, first, stop))


@settings(FUZZ, max_examples=200)
@given(st.integers(0, 10 * 3600 * SAMPLE_RATE))
def test_frame_count_is_ceil_duration_times_25(n: int) -> None:
    assert frame_count(n) == math.ceil(n * 25 / SAMPLE_RATE)
    assert frame_count(n) * SAMPLES_PER_FRAME >= n > (frame_count(n) - 1) * SAMPLES_PER_FRAME


@lru_cache(maxsize=1)
def ave():  # noqa: ANN201 (the extractor type lives behind the registry)
    return get_extractor("ave", ModelsConfig(device="cpu"))


@settings(FUZZ, max_examples=4)
@given(n=st.integers(1, 20_000), size=st.integers(1, 7_000), seed=st.integers(0, 2**16))
def test_ave_stream_equals_offline_and_counts_frames(n: int, size: int, seed: int) -> None:
    """The encoder is costly: a handful of examples, random length and chunk size."""
    extractor = ave()
    x = signal(n, seed)
    offline = extractor.extract(x)
    frames, _ = stream_in_chunks(extractor, x, size)
    assert offline.shape[0] == math.ceil(n / SAMPLE_RATE * 25) == len(frames)
    assert [i for i, _ in frames] == list(range(len(frames)))
    assert np.array_equal(np.stack([f for _, f in frames]), offline)
