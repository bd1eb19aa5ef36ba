"""The training cache: every frame's 328 px crop, made once, kept as one uint8 array on disk.

The data loader decoded a JPEG and resized its crop for every sample of every epoch (on an
H200 the U-Net waited on it: 80-150 samples/s). The crops of an avatar do not change between
epochs, so they are cut once, by the renderer's own `kernels.cpu.resized_crop`, into
`<avatar>/cache/training/crops.npy` ([N,328,328,3] uint8, memory-mapped; 2.4 GB for a
5-minute avatar) and read from there. The cache is keyed on its inputs: the frames' source
(file sizes and times, or the bytes of an in-memory array), the crop boxes and the crop
geometry; anything else is stale and rebuilt. A cache built for more frames serves fewer.

Writes are atomic: a temporary file, preallocated so a full disk fails before any page is
written, then renamed, and `meta.json` (the commit marker) written last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernels.cpu import resized_crop
from kernels.reference import CROP, check_inputs
from synctalk.avatar.layout import (
    CACHE_BOXES_FILE,
    CACHE_CROPS_FILE,
    CACHE_META_FILE,
    frame_name,
    training_cache_dir,
)
from synctalk.log import get_logger
from training.checkpoints import atomic_replace, atomic_write_bytes
from training.datasets import AvatarArrays, CropFn
from training.distributed import DistContext, barrier
from training.profiles import Profile

log = get_logger("training.cache")
VERSION = 1
_CHUNK = 64  # frames cropped per worker task


def frames_identity(frames: Sequence[np.ndarray] | np.ndarray) -> str:
    """What the frames are, cheaply: a memory-mapped file's path, size and time; a JPEG
    folder's file names, sizes and times; otherwise a hash of the frames' bytes."""
    filename = getattr(frames, "filename", None)
    if isinstance(frames, np.memmap) and filename:
        st = os.stat(filename)
        return f"npy:{os.path.realpath(filename)}:{st.st_size}:{st.st_mtime_ns}:{frames.shape}"
    folder = getattr(frames, "folder", None)
    if folder is not None:
        digest = hashlib.sha256(str(Path(folder).resolve()).encode())
        for i in range(len(frames)):
            st = os.stat(Path(folder) / frame_name(i))
            digest.update(f"{i}:{st.st_size}:{st.st_mtime_ns};".encode())
        return f"jpeg:{digest.hexdigest()}"
    digest = hashlib.sha256()
    for i in range(len(frames)):
        frame = np.ascontiguousarray(frames[i])
        digest.update(f"{frame.shape}{frame.dtype}".encode())
        digest.update(memoryview(frame).cast("B"))
    return f"bytes:{digest.hexdigest()}"


@dataclass
class TrainingCache:
    """Crops [N,328,328,3] uint8 (memory-mapped) and feature windows [N,*shape] float32."""

    crops: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def nbytes(self) -> int:
        return int(self.crops.nbytes + self.features.nbytes)


def _meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fresh(directory: Path, data: AvatarArrays, identity: str) -> bool:
    meta = _meta(directory / CACHE_META_FILE)
    if not meta or meta.get("version") != VERSION or meta.get("crop") != CROP:
        return False
    if meta.get("frames") != identity or int(meta.get("count", 0)) < len(data):
        return False
    try:
        boxes = np.load(directory / CACHE_BOXES_FILE)
    except (OSError, ValueError):
        return False
    n = len(data)
    return boxes.shape[0] >= n and np.array_equal(boxes[:n], np.asarray(data.boxes)[:n])


def _crop_range(data: AvatarArrays, out: np.ndarray, start: int, stop: int) -> None:
    """Frames start..stop-1, one decoded frame in memory at a time (1080p: 6 MB each)."""
    for i in range(start, stop):
        frame = np.asarray(data.frames[i])
        box = check_inputs([frame], np.asarray(data.boxes)[i:i + 1])[0]
        out[i] = resized_crop(frame, box)


def _write_crops(data: AvatarArrays, path: Path, workers: int) -> None:
    n = len(data)
    with atomic_replace(path, "training cache") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, CROP, CROP, 3))
        fd = os.open(tmp, os.O_RDWR)
        try:
            # Reserve every block now: writing a memory map onto a full disk is a SIGBUS.
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        with ThreadPoolExecutor(max(1, workers)) as pool:  # OpenCV and JPEG decoding drop the GIL
            list(pool.map(lambda s: _crop_range(data, out, s, min(s + _CHUNK, n)),
                          range(0, n, _CHUNK)))
        out.flush()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def build_cache(avatar_dir: str | Path, data: AvatarArrays, *, workers: int | None = None,
                identity: str | None = None) -> Path:
    """Write (or keep, when fresh) the crop cache for `data`'s frames; returns its folder."""
    directory = training_cache_dir(avatar_dir)
    identity = identity or frames_identity(data.frames)
    if _fresh(directory, data, identity):
        log.info("training_cache_fresh", path=str(directory), frames=len(data))
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CACHE_META_FILE).unlink(missing_ok=True)  # stale from here until rewritten
    (directory / CACHE_CROPS_FILE).unlink(missing_ok=True)  # free its space before the new one
    n = len(data)
    log.info("training_cache_build", path=str(directory), frames=n,
             gigabytes=round(n * CROP * CROP * 3 / 1e9, 3))
    _write_crops(data, directory / CACHE_CROPS_FILE, workers or os.cpu_count() or 1)
    boxes = np.ascontiguousarray(np.asarray(data.boxes)[:n])
    atomic_write_bytes(directory / CACHE_BOXES_FILE, _npy_bytes(boxes), "training cache")
    meta = {"version": VERSION, "crop": CROP, "frames": identity, "count": n}
    atomic_write_bytes(directory / CACHE_META_FILE, json.dumps(meta).encode(), "training cache")
    return directory


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def open_cache(avatar_dir: str | Path, data: AvatarArrays) -> TrainingCache:
    """The cached crops of `data`'s frames (memory-mapped) with its features as float32."""
    directory = training_cache_dir(avatar_dir)
    meta = _meta(directory / CACHE_META_FILE)
    if not meta or int(meta.get("count", 0)) < len(data):
        raise FileNotFoundError(f"{directory}: no training cache for {len(data)} frames; "
                                f"build_cache() first")
    crops = np.load(directory / CACHE_CROPS_FILE, mmap_mode="r")[:len(data)]
    features = np.ascontiguousarray(np.asarray(data.features)[:len(data)], dtype=np.float32)
    return TrainingCache(crops, features)


def training_cache(avatar_dir: str | Path, data: AvatarArrays, profile: Profile,
                   ctx: DistContext, crop: CropFn | None = None) -> TrainingCache | None:
    """The cache a trainer batches from: rank 0 builds it (or finds it fresh) while the other
    ranks wait, then every rank maps it. None when the profile turns it off, or with a custom
    crop function (the cache holds the renderer kernel's crops only)."""
    if not profile.cached_data:
        return None
    if crop is not None:
        log.info("training_cache_off", reason="a custom crop function; the DataLoader crops")
        return None
    if ctx.is_main:
        build_cache(avatar_dir, data)
    barrier(ctx)
    return open_cache(avatar_dir, data)
