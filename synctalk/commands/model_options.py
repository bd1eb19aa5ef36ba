"""The `--feature-mode` and `--device` options of the commands that run the models, and the
models' settings they override."""

from __future__ import annotations

import argparse

from synctalk.config import ModelsConfig


def add_model_options(p: argparse.ArgumentParser, device_help: str) -> None:
    """Add `--feature-mode` and `--device`, each defaulting to the configured models.* value."""
    p.add_argument("--feature-mode", default=None, choices=["ave", "whisper"],
                   help="audio features (default from config: models.feature_mode)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help=f"{device_help} (default from config: models.device)")


def with_model_options(models: ModelsConfig, args: argparse.Namespace) -> ModelsConfig:
    """The models' settings with the options given on the command line applied."""
    updates = {name: getattr(args, name) for name in ("feature_mode", "device")
               if getattr(args, name)}
    return models.model_copy(update=updates)
