"""Avatar frames read on demand: a prepared avatar holds thousands of full-resolution JPEGs,
far more than fits in memory, while the renderer walks them in order (ping-pong) and training
samples them at random. A small LRU cache absorbs the walk's turn-arounds and repeated draws.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from synctalk.avatar.layout import (
    FRAMES_ARRAY,
    FRAMES_DIR,
    META_FILE,
    count_frames,
    frame_name,
    read_meta,
)

DEFAULT_CACHE_FRAMES = 32


class JpegFrames(Sequence[np.ndarray]):
    """Frames `folder/000000.jpg ...` as a sequence of BGR uint8 HxWx3 arrays, decoded lazily.

    Thread-safe; returned arrays are shared with the cache, so treat them as read-only."""

    def __init__(self, folder: Path, num_frames: int, cache_frames: int = DEFAULT_CACHE_FRAMES) -> None:
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        self.folder = Path(folder)
        self.num_frames = num_frames
        self.cache_frames = max(0, cache_frames)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.num_frames))]
        i = int(index)
        if i < 0:
            i += self.num_frames
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {index} out of range (0..{self.num_frames - 1})")
        with self._lock:
            cached = self._cache.get(i)
            if cached is not None:
                self._cache.move_to_end(i)
                return cached
        frame = self._read(i)
        with self._lock:
            self._cache[i] = frame
            while len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
        return frame

    def _read(self, i: int) -> np.ndarray:
        path = self.folder / frame_name(i)
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise OSError(f"cannot read avatar frame {path}")
        frame.setflags(write=False)
        return frame

    def __repr__(self) -> str:
        return f"JpegFrames({str(self.folder)!r}, num_frames={self.num_frames})"


def open_frames(avatar_dir: Path, cache_frames: int = DEFAULT_CACHE_FRAMES) -> Sequence[np.ndarray]:
    """The avatar's frames as a lazy sequence: `frames.npy` memory-mapped if present (tiny test
    avatars), else the `frames/` folder named by avatar.json (or the consecutive JPEGs in it)."""
    avatar_dir = Path(avatar_dir)
    array = avatar_dir / FRAMES_ARRAY
    if array.is_file():
        frames = np.load(array, mmap_mode="r")
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"{array}: expected uint8 [N,H,W,3], got {frames.dtype} {list(frames.shape)}")
        return frames
    if (avatar_dir / META_FILE).is_file():
        meta = read_meta(avatar_dir)
        folder = avatar_dir / meta.frames
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the avatar's frames folder is missing")
        return JpegFrames(folder, meta.num_frames, cache_frames)
    folder = avatar_dir / FRAMES_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{avatar_dir}: no {FRAMES_ARRAY} and no {FRAMES_DIR}/ folder")
    return JpegFrames(folder, count_frames(folder), cache_frames)
