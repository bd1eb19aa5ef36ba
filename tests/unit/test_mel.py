"""The NumPy mel front ends against librosa, and the streaming mel against the offline one."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal

from synctalk.audio.mel import BLOCK, WAV2LIP, mel_filterbank, wav2lip_mel, whisper_log_mel
from synctalk.audio.mel_stream import MelStream
from tests.support.features import drain, signal


@pytest.mark.parametrize(
    "n_fft,fmin,fmax", [(800, 55.0, 7600.0), (400, 0.0, 8000.0), (512, 20.0, 4000.0)]
)
def test_filterbank_matches_librosa(n_fft: int, fmin: float, fmax: float) -> None:
    ours = mel_filterbank(16000, n_fft, 80, fmin, fmax)
    ref = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=80, fmin=fmin, fmax=fmax,
                              dtype=np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-14)


def librosa_wav2lip_mel(x: np.ndarray) -> np.ndarray:
    """Wav2Lip's audio.melspectrogram, written with librosa and scipy."""
    y = scipy.signal.lfilter([1, -0.97], [1], x.astype(np.float64))
    spec = np.abs(librosa.stft(y, n_fft=800, hop_length=200, win_length=800, center=True,
                               pad_mode="reflect"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4).T


@pytest.mark.parametrize("n", [801, 16000, 16000 * 3 + 77])
def test_wav2lip_mel_matches_librosa(n: int) -> None:
    x = signal(n)
    ours = wav2lip_mel(x)
    assert ours.shape == (n // 200 + 1, 80) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, librosa_wav2lip_mel(x), atol=2e-4)
    assert ours.min() >= -4 and ours.max() <= 4


def test_whisper_log_mel_matches_librosa() -> None:
    x = signal(16000)
    spec = np.abs(librosa.stft(x.astype(np.float64), n_fft=400, hop_length=160, center=True,
                               pad_mode="constant")) ** 2
    basis = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, dtype=np.float64)
    ref = np.log10(np.maximum(basis @ spec, 1e-10)).T
    ours = whisper_log_mel(x, 0, ref.shape[0])
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert np.array_equal(whisper_log_mel(x, -5, -3), np.full((2, 80), -10.0, np.float32))


def test_block_rows_do_not_depend_on_neighbours() -> None:
    x = signal(WAV2LIP.block_samples).astype(np.float64)
    full = WAV2LIP.compute_block(x)
    cut = x.copy()
    cut[WAV2LIP.block_samples // 2 :] = 0
    rows_intact = (WAV2LIP.block_samples // 2 - WAV2LIP.n_fft) // WAV2LIP.hop
    assert np.array_equal(WAV2LIP.compute_block(cut)[:rows_intact], full[:rows_intact])


@pytest.mark.parametrize("n", [1, 400, 401, 999, BLOCK * 200 * 3 + 5])
@pytest.mark.parametrize("size", [1, 199, 201, 4096])
def test_streaming_wav2lip_mel_is_bit_identical(n: int, size: int) -> None:
    x = signal(n, seed=n)
    stream, got, done = MelStream.wav2lip(), [], 0
    for start in range(0, n, size):
        stream.push(x[start : start + size])
        assert stream.ready <= max(0, (stream.n_samples - 400) // 200 + 1)
        done = drain(stream, got, done, stream.ready)
    stream.finish()
    drain(stream, got, done, stream.ready)
    assert np.array_equal(np.concatenate(got), wav2lip_mel(x))


@pytest.mark.parametrize("size", [1, 160, 1000])
def test_streaming_whisper_mel_is_bit_identical(size: int) -> None:
    x = signal(9000, seed=3)
    first, stop = -48, 9000 // 160 + 20
    stream, got, done = MelStream.whisper(first), [], first
    for start in range(0, x.size, size):
        stream.push(x[start : start + size])
        done = drain(stream, got, done, min(stream.ready, stop))
    stream.finish()
    drain(stream, got, done, stop)
    assert np.array_equal(np.concatenate(got), whisper_log_mel(x, first, stop))


def test_frames_that_read_the_end_wait_for_finish() -> None:
    stream = MelStream.wav2lip()
    stream.push(signal(1000))
    assert stream.ready == 4  # frame 4 reads samples up to 1200
    with pytest.raises(ValueError, match="not available"):
        stream.get(0, 5)
    stream.finish()
    assert stream.ready == 6
