"""Every avatar's decoded source frames as one uint8 tensor [N,H,W,3] on the renderer's device.

Decoded once and shared by every stream of the replica. The store is bounded in bytes with
LRU eviction across avatars; an avatar that a running stream holds (`acquire`) is pinned and
never evicted, so streams do not thrash each other. An avatar that cannot fit (larger than the
budget, or than what the pinned avatars leave, or than free GPU memory) raises
`AvatarTooLarge`, which the service turns into RESOURCE_EXHAUSTED: never a CUDA OOM crash.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from synctalk.log import get_logger

log = get_logger("synctalk.render.device_frames")


class AvatarTooLarge(Exception):
    """The avatar's frames do not fit in the renderer's device memory budget."""


@dataclass
class _Entry:
    frames: torch.Tensor
    pins: int = 0
    stale: bool = False  # dropped while pinned: removed at the last release

    @property
    def nbytes(self) -> int:
        return self.frames.numel() * self.frames.element_size()


class DeviceFrames:
    """Source frames per avatar key on one torch device, LRU within `max_bytes`."""

    def __init__(self, device: str | torch.device, max_bytes: int,
                 on_change: Callable[[int], None] | None = None) -> None:
        self.device = torch.device(device)
        self.max_bytes = int(max_bytes)
        self.bytes = 0  # resident plus reserved for uploads in progress
        self.uploads = 0
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Any, threading.Lock] = {}
        self._on_change = on_change

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[Any]:
        with self._lock:
            return list(self._entries)

    def get(self, model: Any) -> torch.Tensor:
        """The frames of `model.avatar` (a RenderModel), uploaded on first use."""
        key = model.key
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry.frames
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    return entry.frames
            frames = self._upload(model)
        return frames

    def acquire(self, model: Any) -> torch.Tensor:
        """Like `get`, and pin the avatar until `release` (a stream's whole life)."""
        while True:
            frames = self.get(model)
            with self._lock:
                entry = self._entries.get(model.key)
                if entry is not None:  # else evicted between the two steps: load again
                    entry.pins += 1
                    return frames

    def release(self, key: Any) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.pins > 0:
                entry.pins -= 1
                if entry.pins == 0 and entry.stale:
                    self.bytes -= self._entries.pop(key).nbytes
        self._changed()

    def drop(self, key: Any) -> None:
        """Forget an avatar (reloaded or evicted from the model cache): now, or when the
        last stream holding it ends; running batches keep their reference until they finish."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.pins > 0:
                entry.stale = True
            elif entry is not None:
                self.bytes -= self._entries.pop(key).nbytes
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.bytes)

    def _reserve(self, name: str, need: int) -> None:
        """Evict unpinned avatars, oldest first, until `need` more bytes fit; else refuse."""
        budget_mb = self.max_bytes / 2**20
        if need > self.max_bytes:
            raise AvatarTooLarge(
                f"avatar {name!r} needs {need / 2**20:.0f} MiB of device memory for its frames, "
                f"more than the renderer's budget of {budget_mb:.0f} MiB "
                "(renderer.device_frames_mb)")
        with self._lock:
            unpinned = [k for k, e in self._entries.items() if e.pins == 0]
            while self.bytes + need > self.max_bytes and unpinned:
                gone = self._entries.pop(unpinned.pop(0))
                self.bytes -= gone.nbytes
                log.info("device_frames.evicted", bytes=gone.nbytes)
            if self.bytes + need > self.max_bytes:
                raise AvatarTooLarge(
                    f"avatar {name!r} needs {need / 2**20:.0f} MiB of device memory and the "
                    f"avatars in use hold {self.bytes / 2**20:.0f} of the {budget_mb:.0f} MiB "
                    "budget: retry when a stream ends, or raise renderer.device_frames_mb")
            self.bytes += need

    def _allocate(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The device tensor; on OOM, free every unpinned avatar and the allocator's cache and
        try once more, then refuse."""
        try:
            return torch.empty(shape, dtype=torch.uint8, device=self.device)
        except torch.OutOfMemoryError:
            with self._lock:
                for key in [k for k, e in self._entries.items() if e.pins == 0]:
                    self.bytes -= self._entries.pop(key).nbytes
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            try:
                return torch.empty(shape, dtype=torch.uint8, device=self.device)
            except torch.OutOfMemoryError as exc:
                raise AvatarTooLarge(
                    f"avatar {name!r}: its frames ({int(np.prod(shape)) / 2**20:.0f} MiB) do "
                    "not fit in free GPU memory; retry later") from exc

    def _upload(self, model: Any) -> torch.Tensor:
        avatar = model.avatar
        shape = (int(avatar.num_frames), int(avatar.height), int(avatar.width), 3)
        need = int(np.prod(shape))
        self._reserve(avatar.name, need)
        try:
            frames = self._allocate(avatar.name, shape)
            for i in range(shape[0]):
                src = np.ascontiguousarray(avatar.frames[i], dtype=np.uint8)
                if not src.flags.writeable:  # a memory-mapped frames.npy: torch wants writable
                    src = src.copy()
                if src.shape != shape[1:]:
                    raise ValueError(f"avatar {avatar.name!r}: frame {i} is {list(src.shape)}, "
                                     f"expected {list(shape[1:])}")
                frames[i].copy_(torch.from_numpy(src))
        except BaseException:
            with self._lock:
                self.bytes -= need
            raise
        with self._lock:
            self._entries[model.key] = _Entry(frames)
            self.uploads += 1
        log.info("device_frames.loaded", avatar=avatar.name, frames=shape[0],
                 mib=round(need / 2**20, 1), device=str(self.device))
        self._changed()
        return frames
