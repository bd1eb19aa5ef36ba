"""avatar.json records the audio encoder each feature mode was trained against; avatars from
before the record (the bundled demo) still load, and training reports what it finds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import training.pipeline as pipeline
from synctalk.avatar import AvatarMeta, read_meta, write_meta
from synctalk.avatar.layout import (
    AUDIO_ENCODERS_KEY,
    AUDIO_FILE,
    audio_encoder_record,
    features_path,
    record_audio_encoder,
)
from synctalk.config import ModelsConfig, Settings
from synctalk.features.encoder_info import describe_audio_encoder
from tests.support.paths import ROOT

SEEDED = {"mode": "ave", "trained": False, "checkpoint": "", "sha256": None}
TRAINED = {"mode": "ave", "trained": True, "checkpoint": "audio_visual_encoder.pth",
           "sha256": "ab" * 32}


def _avatar(folder: Path) -> Path:
    folder.mkdir()
    write_meta(folder, AvatarMeta(name=folder.name, width=64, height=48, num_frames=3,
                                  complete=True, extra={"source": "clip.mp4"}))
    return folder


def test_the_record_round_trips_through_avatar_json(tmp_path: Path) -> None:
    avatar = _avatar(tmp_path / "a")
    assert audio_encoder_record(avatar, "ave") is None
    assert record_audio_encoder(avatar, "ave", SEEDED)
    assert record_audio_encoder(avatar, "whisper", {"mode": "whisper", "trained": True,
                                                    "checkpoint": "", "sha256": None})
    assert record_audio_encoder(avatar, "ave", TRAINED)  # replaces that mode's record only
    meta = read_meta(avatar)
    assert meta.extra["source"] == "clip.mp4" and meta.complete
    assert audio_encoder_record(avatar, "ave") == TRAINED
    assert audio_encoder_record(avatar, "whisper")["trained"] is True
    on_disk = json.loads((avatar / "avatar.json").read_text())
    assert on_disk[AUDIO_ENCODERS_KEY]["ave"] == TRAINED


def test_avatars_without_the_record_still_load(tmp_path: Path) -> None:
    demo = ROOT / "assets" / "avatars" / "demo"
    assert read_meta(demo).name == "demo"
    assert audio_encoder_record(demo, "ave") is None
    assert audio_encoder_record(tmp_path, "ave") is None  # no avatar.json at all
    assert not record_audio_encoder(tmp_path, "ave", SEEDED)
    assert not (tmp_path / "avatar.json").exists()


class _Extractor:
    def extract(self, audio: np.ndarray) -> np.ndarray:
        return np.zeros((-(-audio.size // 640), 32, 16, 16), np.float32)


def test_feature_extraction_records_the_encoder(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    avatar = _avatar(tmp_path / "a")
    sf.write(avatar / AUDIO_FILE, np.zeros(3 * 640, np.float32), 16000, subtype="PCM_16")
    monkeypatch.setattr("synctalk.features.get_extractor", lambda mode, models: _Extractor())
    settings = Settings(models=ModelsConfig(ave_checkpoint=""))
    assert pipeline.ensure_features(avatar, "ave", settings) == features_path(avatar, "ave")
    assert audio_encoder_record(avatar, "ave") == SEEDED
    assert not pipeline.trained_against(avatar, "ave", settings).trained


class _Log:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        pass

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


def test_kept_features_from_another_encoder_are_reported(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    avatar = _avatar(tmp_path / "a")
    np.save(features_path(avatar, "ave"), np.zeros((3, 32, 16, 16), np.float32))
    record_audio_encoder(avatar, "ave", SEEDED)
    log = _Log()
    monkeypatch.setattr(pipeline, "log", log)
    checkpoint = str(tmp_path / "audio_visual_encoder.pth")
    trained = Settings(models=ModelsConfig(ave_checkpoint=checkpoint))
    pipeline.ensure_features(avatar, "ave", trained)
    assert [event for event, _ in log.warnings] == ["features.other_encoder"]
    assert "features_ave.npy" in log.warnings[0][1]["hint"]
    recorded = pipeline.trained_against(avatar, "ave", trained)
    assert not recorded.trained  # the summary shows what the features came from

    record_audio_encoder(avatar, "ave", describe_audio_encoder(trained.models, "ave").record())
    log.warnings.clear()
    pipeline.ensure_features(avatar, "ave", trained)
    assert log.warnings == []


def test_without_a_record_training_reports_the_configured_encoder(tmp_path: Path) -> None:
    settings = Settings(models=ModelsConfig(ave_checkpoint=""))
    assert pipeline.trained_against(tmp_path, "ave", settings) == describe_audio_encoder(
        settings.models, "ave")
