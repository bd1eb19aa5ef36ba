"""An untrained `ave` encoder is named, with how to fix it, in the one description the train
summary and `synctalk evaluate`'s report (text and --json) share."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from synctalk.commands.evaluate import format_report
from synctalk.commands.train import summary_lines
from synctalk.config import ModelsConfig
from synctalk.features.encoder_info import (
    AVE_CHECKPOINT_HINT,
    AudioEncoderInfo,
    describe_audio_encoder,
)
from training.evaluate import EvalReport

SEEDED = describe_audio_encoder(ModelsConfig(feature_mode="ave", ave_checkpoint=""))
TRAINED = describe_audio_encoder(ModelsConfig(ave_checkpoint="/w/audio_visual_encoder.pth"),
                                 "ave")


def test_ave_without_a_checkpoint_is_untrained_and_says_how_to_fix_it() -> None:
    assert (SEEDED.mode, SEEDED.trained, SEEDED.checkpoint) == ("ave", False, "")
    assert "UNTRAINED" in SEEDED.label
    assert SEEDED.hint == AVE_CHECKPOINT_HINT
    assert SEEDED.warning.startswith("WARNING:") and AVE_CHECKPOINT_HINT in SEEDED.warning
    assert "SYNCTALK_MODELS__AVE_CHECKPOINT" in AVE_CHECKPOINT_HINT
    assert "models.ave_checkpoint" in AVE_CHECKPOINT_HINT
    assert "audio_visual_encoder.pth" in AVE_CHECKPOINT_HINT


def test_ave_with_a_checkpoint_is_trained() -> None:
    assert (TRAINED.mode, TRAINED.trained) == ("ave", True)
    assert TRAINED.checkpoint == "/w/audio_visual_encoder.pth"
    assert "/w/audio_visual_encoder.pth" in TRAINED.label
    assert TRAINED.warning == "" and TRAINED.hint == ""


def test_whisper_is_the_bundled_pretrained_encoder() -> None:
    bundled = describe_audio_encoder(ModelsConfig(feature_mode="whisper"))
    assert (bundled.mode, bundled.trained, bundled.warning) == ("whisper", True, "")
    assert "bundled" in bundled.label
    local = describe_audio_encoder(ModelsConfig(whisper_model_dir="/m/tiny"), "whisper")
    assert local.trained and local.checkpoint == "/m/tiny" and "/m/tiny" in local.label


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature mode"):
        describe_audio_encoder(ModelsConfig(), "mfcc")


def test_record_names_the_file_with_its_sha256_and_reads_back(tmp_path: Path) -> None:
    weights = tmp_path / "audio_visual_encoder.pth"
    weights.write_bytes(b"weights" * 1000)
    info = describe_audio_encoder(ModelsConfig(ave_checkpoint=str(weights)), "ave")
    record = info.record()
    assert record == {"mode": "ave", "trained": True, "checkpoint": "audio_visual_encoder.pth",
                      "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    back = AudioEncoderInfo.from_record(json.loads(json.dumps(record)))
    assert (back.mode, back.trained, back.checkpoint) == ("ave", True, "audio_visual_encoder.pth")
    assert SEEDED.record() == {"mode": "ave", "trained": False, "checkpoint": "", "sha256": None}
    assert AudioEncoderInfo.from_record(SEEDED.record()).warning == SEEDED.warning


def test_train_summary_warns_only_about_an_untrained_encoder() -> None:
    seeded = summary_lines(0.8, None, SEEDED)
    assert seeded[0] == "syncnet held-out accuracy: 0.800 (0.5 is chance)"
    assert seeded[1:] == [f"audio encoder: {SEEDED.label}", SEEDED.warning]
    trained = summary_lines(0.8, None, TRAINED)
    assert trained[1:] == [f"audio encoder: {TRAINED.label}"]
    assert not any("WARNING" in line for line in trained)
    assert summary_lines(None, None) == ["syncnet held-out accuracy: not measured"]


def _report(encoder: AudioEncoderInfo, recorded: dict | None = None) -> dict:
    report = EvalReport("demo", "x.wav", 10, 0.4, 1.0, 0.7, audio_encoder=encoder.as_dict(),
                        trained_against=recorded)
    return json.loads(json.dumps(report.as_dict()))  # what --json writes


def test_evaluate_report_shows_the_encoder_and_warns_when_untrained() -> None:
    figures = _report(SEEDED)
    assert figures["audio_encoder"]["trained"] is False
    assert figures["audio_encoder"]["warning"] == SEEDED.warning
    assert figures["trained_against"] is None
    text = format_report(figures).splitlines()
    assert f"{'audio encoder':<32} {SEEDED.label}" in text
    assert f"{'avatar trained against':<32} not recorded" in text
    assert text[-1] == SEEDED.warning


def test_evaluate_report_of_a_trained_encoder_has_no_warning() -> None:
    figures = _report(TRAINED, TRAINED.record())
    assert figures["audio_encoder"]["warning"] == ""
    text = format_report(figures)
    assert TRAINED.label in text and "WARNING" not in text
    assert f"{'avatar trained against':<32} ave: SyncTalk_2D" in text


def test_evaluate_report_warns_about_an_avatar_trained_on_the_seeded_encoder() -> None:
    text = format_report(_report(TRAINED, SEEDED.record())).splitlines()
    assert text[-1] == SEEDED.warning and text.count(SEEDED.warning) == 1
    assert f"{'avatar trained against':<32} {SEEDED.label}" in text


def test_evaluate_report_without_encoder_figures_is_unchanged() -> None:
    assert "audio encoder" not in format_report({"frames": 3})
