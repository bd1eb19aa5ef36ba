"""Feature extractors: SyncTalk_2D windowing, streaming == offline bit for bit, look-ahead,
checkpoint loading, levels. Speech comes from piper `joe` in deterministic mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synctalk.audio.levels import VOICED_RMS, LevelMeter, frame_levels
from synctalk.audio.mel import wav2lip_mel
from synctalk.audio.pcm import SAMPLES_PER_FRAME
from synctalk.audio.windows import frame_count
from synctalk.config import ModelsConfig
from synctalk.features import UnknownModeError, get_extractor
from synctalk.features.ave import mel_window, samples_needed
from synctalk.features.ave_runners import OrtEncoderRunner, TorchEncoderRunner
from synctalk.features.whisper import samples_needed as whisper_samples_needed
from synctalk.models.audio_encoder import (
    PREFIX,
    AudioEncoder,
    load_audio_encoder,
    seeded_audio_encoder,
)
from tests.support.audio import speech_16k
from tests.support.features import stream_in_chunks


@pytest.fixture(scope="module")
def ave():
    return get_extractor("ave", ModelsConfig(device="cpu"))


@pytest.fixture(scope="module")
def ave_torch():
    """Eager torch on the CPU: groups of 4, so streams compute partial groups early."""
    return get_extractor("ave", ModelsConfig(device="cpu", backend="torch"))


@pytest.fixture(scope="module")
def whisper():
    return get_extractor("whisper", ModelsConfig(device="cpu"))


@pytest.mark.parametrize("mode", ["ave", "ave_torch", "whisper"])
@pytest.mark.parametrize("size", [1, 333, 640, 16000])
def test_streaming_is_bit_identical_to_offline(mode: str, size: int, request) -> None:
    extractor = request.getfixturevalue(mode)
    # 3 s here (1.5 s one sample at a time); the gRPC test streams the whole 7.3 s file.
    audio = speech_16k()[: 24000 if size == 1 else 48000]
    offline = extractor.extract(audio)
    frames, _ = stream_in_chunks(extractor, audio, size)
    assert [i for i, _ in frames] == list(range(offline.shape[0]))
    assert np.array_equal(np.stack([x for _, x in frames]), offline)


@pytest.mark.parametrize("mode", ["ave", "ave_torch", "whisper"])
def test_random_chunking_is_bit_identical(mode: str, request) -> None:
    extractor = request.getfixturevalue(mode)
    audio = speech_16k()[:40000]
    rng = np.random.default_rng(7)
    stream, frames, pos = extractor.start_stream(), [], 0
    while pos < audio.size:
        step = int(rng.integers(1, 3000))
        frames += stream.push(audio[pos : pos + step])
        pos += step
    frames += stream.finish()
    assert np.array_equal(np.stack([x for _, x in frames]), extractor.extract(audio))


@pytest.mark.parametrize("n", [1, 639, 640, 641, 3000, 7001, 20480])
def test_frame_count_is_ceil_duration_times_25(ave, whisper, n: int) -> None:
    audio = speech_16k()[:n]
    expected = int(np.ceil(n / 16000 * 25))
    assert ave.extract(audio).shape == (expected, 32, 16, 16)
    assert whisper.extract(audio).shape == (expected, 32, 16, 24)
    assert len(stream_in_chunks(ave, audio, 999)[0]) == expected


@pytest.mark.parametrize("mode,needed", [("ave", samples_needed), ("whisper", whisper_samples_needed)])
def test_stream_emits_each_frame_as_soon_as_its_audio_arrived(mode: str, needed, request) -> None:
    extractor = request.getfixturevalue(mode)
    audio = speech_16k()[:48000]
    frames, seen_at = stream_in_chunks(extractor, audio, 160)
    early = [(i, at) for (i, _), at in zip(frames, seen_at, strict=True) if at < audio.size]
    assert len(early) > 30, "frames must leave before the end of input"
    for i, at in early:
        assert needed(i) <= at < needed(i) + 160  # not before its audio, not a chunk later
        assert at - (i + 1) * SAMPLES_PER_FRAME <= extractor.lookahead_frames * SAMPLES_PER_FRAME
    held_back = [i for (i, _), at in zip(frames, seen_at, strict=True) if at == audio.size]
    assert held_back == list(range(len(early), frame_count(audio.size)))
    assert len(held_back) <= extractor.lookahead_frames + 1


def synctalk_reference(audio: np.ndarray, encode) -> np.ndarray:
    """SyncTalk_2D's own arithmetic, written out independently: N windows, start
    int(80*j/25) clamped to the last 16 mel frames, first and last rows duplicated."""
    mel = wav2lip_mel(audio)
    n = int((mel.shape[0] - 16) / 80.0 * 25) + 2
    windows = []
    for j in range(n):
        start = int(80.0 * (j / 25.0))
        if start + 16 > mel.shape[0]:
            start = mel.shape[0] - 16
        windows.append(mel[start : start + 16].T)
    feats = np.stack([encode(w) for w in windows])
    return np.concatenate([feats[:1], feats, feats[-1:]])


def test_ave_matches_synctalk2d_windows(ave) -> None:
    audio = speech_16k()[:33000]
    model = ave.runner.model

    def encode(w: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(w)[None, None]).numpy()[0]

    reference = synctalk_reference(audio, encode)  # [N+2, 512]
    ours = ave.extract(audio).reshape(-1, 16, 512)
    rows = ours[:, 8]  # frame i's own row (row i)
    n_ref = reference.shape[0]
    assert rows.shape[0] >= n_ref
    np.testing.assert_allclose(rows[:n_ref], reference, rtol=1e-5, atol=1e-5)
    assert all(np.array_equal(rows[r], rows[n_ref - 1]) for r in range(n_ref, rows.shape[0]))
    for i in (0, 3, rows.shape[0] - 1):  # get_audio_features: rows i-8..i+7, zeros outside
        for k in range(16):
            r = i - 8 + k
            expected = rows[r] if 0 <= r < rows.shape[0] else np.zeros(512)
            assert np.array_equal(ours[i, k], expected)


@pytest.mark.parametrize("runner_class", [TorchEncoderRunner, OrtEncoderRunner])
def test_a_window_does_not_depend_on_its_group_neighbours(runner_class) -> None:
    """What lets a stream compute a group early: same shape + position -> same numbers."""
    runner = runner_class(seeded_audio_encoder(), group=4)
    mel = wav2lip_mel(speech_16k()[:16000])
    windows = np.stack([mel_window(mel, 3 * j) for j in range(4)])
    partial = windows.copy()
    partial[2:] = 0
    assert np.array_equal(runner.encode_group(partial)[:2], runner.encode_group(windows)[:2])


def test_backends_agree() -> None:
    model = seeded_audio_encoder()
    mel = wav2lip_mel(speech_16k()[:16000])
    windows = np.stack([mel_window(mel, 3 * j) for j in range(4)])
    torch_out = TorchEncoderRunner(model, group=4).encode_group(windows)
    ort_out = OrtEncoderRunner(model, group=4).encode_group(windows)
    np.testing.assert_allclose(ort_out, torch_out, rtol=1e-5, atol=1e-5)
    assert ort_out.shape == (4, 512) and (ort_out >= 0).all()  # ReLU last


def test_whisper_features_follow_speech(whisper) -> None:
    speech = speech_16k()[:32000]
    silence = np.zeros(32000, np.float32)
    a, b = whisper.extract(speech), whisper.extract(silence)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert np.abs(a[20] - b[20]).mean() > 0.1
    assert not a[0].reshape(32, 384)[:16].any()


def save_encoder(path, seed: int, prefixed: bool) -> AudioEncoder:
    model = seeded_audio_encoder(seed)
    state = model.state_dict()
    if not prefixed:
        state = {k.removeprefix(PREFIX): v for k, v in state.items()}
    torch.save(state, path)
    return model


@pytest.mark.parametrize("prefixed", [False, True])
def test_ave_checkpoint_loads_in_both_key_formats(tmp_path, prefixed: bool) -> None:
    path = tmp_path / "audio_visual_encoder.pth"
    source = save_encoder(path, seed=3, prefixed=prefixed)
    loaded = load_audio_encoder(path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    extractor = get_extractor("ave", ModelsConfig(device="cpu", ave_checkpoint=str(path)))
    default = get_extractor("ave", ModelsConfig(device="cpu"))
    audio = speech_16k()[:8000]
    assert not np.array_equal(extractor.extract(audio), default.extract(audio))


def test_raw_synctalk_keys_have_no_prefix(tmp_path) -> None:
    path = tmp_path / "raw.pth"
    save_encoder(path, seed=1, prefixed=False)
    keys = list(torch.load(path, weights_only=True))
    assert keys[0] == "0.conv_block.0.weight" and len(keys) == 13 * 7


def test_foreign_checkpoint_is_rejected(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not an AVE audio encoder"):
        load_audio_encoder(path)


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(UnknownModeError, match="hubert"):
        get_extractor("hubert", ModelsConfig())


def test_levels_mark_speech_voiced_and_silence_not() -> None:
    audio = np.concatenate([np.zeros(6400, np.float32), speech_16k()[8000:20000]])
    rms, voiced = frame_levels(audio)
    assert rms.shape == (frame_count(audio.size),)
    assert not voiced[:10].any() and voiced[10:].mean() > 0.6
    expected = np.sqrt(np.mean(audio[6400:7040].astype(np.float64) ** 2))
    assert rms[10] == pytest.approx(expected, rel=1e-6)
    assert (rms > VOICED_RMS).tolist() == voiced.tolist()
    meter = LevelMeter()
    for start in range(0, audio.size, 777):
        meter.push(audio[start : start + 777])
    meter.finish()
    assert [meter.pop(i) for i in range(rms.size)] == pytest.approx(rms.tolist(), rel=1e-6)
