"""The `--feature-mode` and `--device` options of the commands that run the models, and the
models' settings they override."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.avatar.layout import feature_modes, mode_for_avatar
from synctalk.config import ModelsConfig

MODE_HELP = ("audio features (default: models.feature_mode, or the mode the avatar has a "
             "U-Net for when it lacks that one)")


def add_model_options(p: argparse.ArgumentParser, device_help: str,
                      mode_help: str = MODE_HELP) -> None:
    """Add `--feature-mode` and `--device`, each defaulting to the configured models.* value."""
    p.add_argument("--feature-mode", default=None, choices=["ave", "whisper"], help=mode_help)
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help=f"{device_help} (default from config: models.device)")


def with_model_options(models: ModelsConfig, args: argparse.Namespace,
                       avatar_dir: Path | None = None, default_mode: str | None = None
                       ) -> ModelsConfig:
    """The models' settings with the options given on the command line applied. Without
    `--feature-mode` the mode is `default_mode` (models.feature_mode), or, for an avatar
    in `avatar_dir` without a U-Net for it, the mode it has one for."""
    updates = {name: getattr(args, name, None) for name in ("feature_mode", "device")
               if getattr(args, name, None)}
    if "feature_mode" not in updates:
        mode = default_mode or models.feature_mode
        trained = feature_modes(avatar_dir) if avatar_dir is not None else []
        updates["feature_mode"] = mode_for_avatar(mode, trained)
    return models.model_copy(update=updates)
