"""The look-ahead trim (live input): a frame's last `trim` context rows read as zeros, the
stream lets the frame out `trim` frames sooner, and streaming still equals offline."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk.audio.pcm import SAMPLES_PER_FRAME
from synctalk.audio.windows import CONTEXT_ROWS, MAX_TRIM
from synctalk.config import ModelsConfig
from synctalk.features import get_extractor
from synctalk.features.ave import samples_needed
from synctalk.features.whisper import samples_needed as whisper_samples_needed
from tests.support.audio import speech_16k
from tests.support.features import stream_in_chunks


@pytest.fixture(scope="module")
def ave():
    return get_extractor("ave", ModelsConfig(device="cpu"))


@pytest.fixture(scope="module")
def whisper():
    return get_extractor("whisper", ModelsConfig(device="cpu"))


@pytest.mark.parametrize("mode", ["ave", "whisper"])
@pytest.mark.parametrize("trim", [1, 3, MAX_TRIM])
def test_trimmed_stream_equals_trimmed_offline(mode: str, trim: int, request) -> None:
    extractor = request.getfixturevalue(mode)
    audio = speech_16k()[:40000]
    offline = extractor.extract(audio, trim)
    frames, _ = stream_in_chunks(extractor, audio, 517, trim)
    assert [i for i, _ in frames] == list(range(offline.shape[0]))
    assert np.array_equal(np.stack([x for _, x in frames]), offline)


@pytest.mark.parametrize("mode", ["ave", "whisper"])
def test_a_trim_zeroes_only_the_last_rows(mode: str, request) -> None:
    extractor = request.getfixturevalue(mode)
    audio = speech_16k()[:40000]
    full = extractor.extract(audio)
    trimmed = extractor.extract(audio, 3)
    rows = full.reshape(len(full), CONTEXT_ROWS, -1)
    cut = trimmed.reshape(len(trimmed), CONTEXT_ROWS, -1)
    assert np.array_equal(cut[:, : CONTEXT_ROWS - 3], rows[:, : CONTEXT_ROWS - 3])
    assert not cut[:, CONTEXT_ROWS - 3 :].any()
    assert rows[20:30, CONTEXT_ROWS - 3 :].any(), "the full rows carry speech"


@pytest.mark.parametrize("mode,needed", [("ave", samples_needed), ("whisper", whisper_samples_needed)])
def test_a_trimmed_stream_lets_frames_out_sooner(mode: str, needed, request) -> None:
    extractor = request.getfixturevalue(mode)
    audio = speech_16k()[:48000]
    trim = 3
    frames, seen_at = stream_in_chunks(extractor, audio, 160, trim)
    full, full_at = stream_in_chunks(extractor, audio, 160)
    early = [(i, at) for (i, _), at in zip(frames, seen_at, strict=True) if at < audio.size]
    assert len(early) > 30
    for i, at in early:
        assert needed(i, trim) <= at < needed(i, trim) + 160
        assert at - (i + 1) * SAMPLES_PER_FRAME <= extractor.lookahead_for(trim) * SAMPLES_PER_FRAME
    sooner = [full_at[i] - at for i, at in early if full_at[i] < audio.size]
    # ave frames each come `trim` frames sooner; whisper's come a block sooner, `trim` in 8.
    assert abs(np.mean(sooner) - trim * SAMPLES_PER_FRAME) <= SAMPLES_PER_FRAME / 2
    assert extractor.lookahead_for(trim) < extractor.lookahead_for(0) == extractor.lookahead_frames


@pytest.mark.parametrize("trim", [-1, MAX_TRIM + 1])
def test_a_trim_outside_the_context_is_refused(ave, trim: int) -> None:
    with pytest.raises(ValueError, match="look-ahead trim"):
        ave.start_stream(trim)
    with pytest.raises(ValueError, match="look-ahead trim"):
        ave.extract(np.zeros(640, np.float32), trim)
