"""Avatars and their U-Nets, loaded on first use and kept in bounded LRU caches.

Two levels: `Avatar` objects (metadata, boxes, lazy frames: cheap) and `RenderModel`s (an
avatar's U-Net runner for one feature mode: tens of MB and a session each), the latter
bounded by `MODEL_CACHE_SIZE`. An entry is reloaded when its folder or checkpoint changes on
disk (a retrained avatar is picked up without a restart). A stream holds its model for its
whole life, so eviction never pulls a model out from under a running stream. Decoded source
frames live in one shared byte-bounded `FrameCache`.

Errors are `RpcError`s: INVALID_ARGUMENT for a bad name, NOT_FOUND for an unknown avatar,
FAILED_PRECONDITION for an avatar that exists but cannot render (missing or broken files, no
U-Net for the feature mode, unreadable checkpoint).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from synctalk.avatar import Avatar, list_avatars, load_avatar, valid_avatar_name
from synctalk.avatar.format import is_avatar
from synctalk.avatar.layout import DEFINING_FILES
from synctalk.config import ModelsConfig
from synctalk.log import get_logger
from synctalk.render.device_frames import DeviceFrames
from synctalk.render.encode import encode_jpeg
from synctalk.render.pipeline import FrameCache, RenderModel, load_render_model
from synctalk.rpc.errors import RpcError, invalid, not_found, quote

AVATAR_CACHE_SIZE = 64
MODEL_CACHE_SIZE = 4

log = get_logger("services.renderer.avatars")


def failed_precondition(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.FAILED_PRECONDITION, message)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return -1


def _stamp(path: Path) -> tuple[int, ...]:
    """Changes when the folder (renames into it) or one of its defining files is rewritten."""
    return tuple(_mtime(path / name) for name in DEFINING_FILES)


def checkpoint_stamp(model: RenderModel) -> int:
    """Changes when the model's U-Net checkpoint is rewritten (what it draws changes)."""
    return _mtime(model.avatar.unet_checkpoint(model.mode))


@dataclass
class _AvatarEntry:
    avatar: Avatar
    stamp: tuple[int, ...]
    still_jpeg: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _ModelEntry:
    model: RenderModel
    stamp: tuple[tuple[int, ...], int]


class AvatarStore:
    """The avatar store of one renderer process (blocking calls: run them in a thread)."""

    def __init__(self, store: Path, models: ModelsConfig, frame_cache: FrameCache | None = None,
                 model_cache_size: int = MODEL_CACHE_SIZE,
                 avatar_cache_size: int = AVATAR_CACHE_SIZE,
                 device_frames: DeviceFrames | None = None) -> None:
        self.store = Path(store)
        self.models = models
        self.frames = frame_cache or FrameCache()
        self.device_frames = device_frames  # the resident pipeline's copies, dropped alongside
        self.model_cache_size = max(1, model_cache_size)
        self.avatar_cache_size = max(1, avatar_cache_size)
        self._avatars: OrderedDict[str, _AvatarEntry] = OrderedDict()
        self._models: OrderedDict[tuple[str, str], _ModelEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.model_loads = 0

    def names(self) -> list[str]:
        return list_avatars(self.store)

    def path_of(self, name: str, field_path: str = "name") -> Path:
        if not valid_avatar_name(name):
            raise invalid(field_path, f"invalid avatar name {quote(name)} (letters, digits, '_', "
                                      "'-', '.', no leading '.', at most 64 characters)")
        return self.store / name

    def avatar(self, name: str, field_path: str = "name") -> Avatar:
        return self._avatar_entry(name, field_path).avatar

    def _avatar_entry(self, name: str, field_path: str) -> _AvatarEntry:
        path = self.path_of(name, field_path)
        stamp = _stamp(path)
        with self._lock:
            entry = self._avatars.get(name)
            if entry is not None and entry.stamp == stamp:
                self._avatars.move_to_end(name)
                return entry
        if not path.is_dir() or not is_avatar(path):
            raise not_found("avatar", name)
        try:
            avatar = load_avatar(path)
        except (ValueError, OSError) as exc:
            raise failed_precondition(f"avatar {name!r} cannot be used: {exc}") from exc
        entry = _AvatarEntry(avatar, stamp)
        with self._lock:
            self._avatars[name] = entry
            self._avatars.move_to_end(name)
            while len(self._avatars) > self.avatar_cache_size:
                self._avatars.popitem(last=False)
        return entry

    def still_jpeg(self, name: str, quality: int) -> bytes:
        entry = self._avatar_entry(name, "name")
        if quality not in entry.still_jpeg:
            entry.still_jpeg[quality] = encode_jpeg(entry.avatar.still(), quality)
        return entry.still_jpeg[quality]

    def model(self, name: str, mode: str, field_path: str = "config.avatar") -> RenderModel:
        """The avatar's U-Net runner for `mode`, loaded once (concurrent callers share it)."""
        entry = self._avatar_entry(name, field_path)
        avatar = entry.avatar
        key = (name, mode)
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            stamp = (entry.stamp, _mtime(avatar.unet_checkpoint(mode)))
            with self._lock:
                cached = self._models.get(key)
                if cached is not None and cached.stamp == stamp:
                    self._models.move_to_end(key)
                    return cached.model
            if mode not in avatar.feature_modes():
                have = ", ".join(avatar.feature_modes()) or "none"
                raise failed_precondition(f"avatar {name!r} has no U-Net for feature mode "
                                          f"{mode!r} (trained: {have})")
            try:
                model = load_render_model(avatar, mode, self.models, self.frames)
            except (ValueError, OSError) as exc:
                raise failed_precondition(
                    f"avatar {name!r}: the U-Net for {mode!r} cannot be loaded: {exc}") from exc
            model.key = (str(avatar.path), entry.stamp)
            self.model_loads += 1
            log.info("avatar.model_loaded", avatar=name, mode=mode)
            with self._lock:
                old = self._models.pop(key, None)
                self._models[key] = _ModelEntry(model, stamp)
                evicted = []
                while len(self._models) > self.model_cache_size:
                    evicted.append(self._models.popitem(last=False)[1].model)
            if old is not None and old.model.key != model.key:
                self._drop_frames(old.model.key)
            for gone in evicted:
                if not any(e.model.key == gone.key for e in self._models.values()):
                    self._drop_frames(gone.key)
                log.info("avatar.model_evicted", avatar=gone.avatar.name, mode=gone.mode)
            return model

    def _drop_frames(self, key: object) -> None:
        self.frames.drop(key)
        if self.device_frames is not None:
            self.device_frames.drop(key)

    def loaded_models(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._models)
