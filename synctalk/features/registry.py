"""Feature modes by name; each model loads once per process and is shared by every stream."""

from __future__ import annotations

import threading
from collections.abc import Callable

from synctalk.config import ModelsConfig
from synctalk.features.base import FeatureExtractor
from synctalk.features.device import resolve_device

MODES = ("ave", "whisper")


class UnknownModeError(ValueError):
    """A feature mode name that no extractor implements."""


def _build_ave(models: ModelsConfig) -> FeatureExtractor:
    from synctalk.features.ave import AveExtractor
    from synctalk.features.ave_runners import build_runner

    return AveExtractor(build_runner(models))


def _build_whisper(models: ModelsConfig) -> FeatureExtractor:
    from synctalk.features.whisper import WhisperEncoder, WhisperExtractor, default_model_dir

    device = resolve_device(models)
    model_dir = models.whisper_model_dir or default_model_dir()
    # One thread per call: a 96-frame window is too small to split (2 threads ran 3x slower
    # on 2 cores); concurrent streams run in parallel instead.
    return WhisperExtractor(WhisperEncoder(model_dir, device, models.threads or 1))


_BUILDERS: dict[str, Callable[[ModelsConfig], FeatureExtractor]] = {
    "ave": _build_ave,
    "whisper": _build_whisper,
}
_cache: dict[tuple, FeatureExtractor] = {}
_lock = threading.Lock()


def _key(name: str, models: ModelsConfig) -> tuple:
    return (name, models.device, models.backend, models.fp16, models.ave_checkpoint,
            models.whisper_model_dir, models.threads)


def get_extractor(name: str, models: ModelsConfig) -> FeatureExtractor:
    """The process-wide extractor for `name` under this model configuration."""
    if name not in _BUILDERS:
        raise UnknownModeError(f"unknown feature mode {name!r} (available: {', '.join(MODES)})")
    key = _key(name, models)
    with _lock:
        if key not in _cache:
            _cache[key] = _BUILDERS[name](models)
        return _cache[key]
