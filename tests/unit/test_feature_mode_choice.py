"""Which feature mode a command uses: `--feature-mode` when given; else the configured one
(models.train_feature_mode, whisper, for training new avatars; models.feature_mode for the
rest), unless the avatar already has a U-Net in another mode only, which it then goes on in."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from synctalk.avatar.layout import mode_for_avatar, unet_path
from synctalk.commands.model_options import with_model_options
from synctalk.config import ModelsConfig


@pytest.mark.parametrize(("configured", "trained", "chosen"), [
    ("ave", [], "ave"), ("whisper", [], "whisper"), ("ave", ["ave", "whisper"], "ave"),
    ("whisper", ["ave"], "ave"), ("ave", ["whisper"], "whisper"),
])
def test_mode_for_avatar(configured: str, trained: list[str], chosen: str) -> None:
    assert mode_for_avatar(configured, trained) == chosen


def test_new_avatars_train_on_whisper_by_default() -> None:
    models = ModelsConfig()
    assert models.train_feature_mode == "whisper" and models.feature_mode == "ave"


def args(mode: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(feature_mode=mode, device=None)


def with_unets(folder: Path, *modes: str) -> Path:
    for mode in modes:
        unet_path(folder, mode).parent.mkdir(parents=True, exist_ok=True)
        unet_path(folder, mode).write_bytes(b"")
    return folder


def test_training_a_new_avatar_uses_the_training_default(tmp_path: Path) -> None:
    models = ModelsConfig()
    chosen = with_model_options(models, args(), tmp_path / "fresh", models.train_feature_mode)
    assert chosen.feature_mode == "whisper"
    explicit = with_model_options(models, args("ave"), tmp_path / "fresh",
                                  models.train_feature_mode)
    assert explicit.feature_mode == "ave"


def test_an_avatar_trained_in_one_mode_goes_on_in_it(tmp_path: Path) -> None:
    models = ModelsConfig()
    old = with_unets(tmp_path / "old", "ave")
    assert with_model_options(models, args(), old, models.train_feature_mode).feature_mode == "ave"
    new = with_unets(tmp_path / "new", "whisper")
    assert with_model_options(models, args(), new).feature_mode == "whisper"  # infer, evaluate
    both = with_unets(tmp_path / "both", "ave", "whisper")
    assert with_model_options(models, args(), both).feature_mode == "ave"
    assert with_model_options(models, args("whisper"), old).feature_mode == "whisper"
