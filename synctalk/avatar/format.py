"""A prepared avatar opened for rendering and training: its crop boxes checked, its frames
read lazily. The folder's layout and avatar.json live in `synctalk.avatar.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synctalk.avatar import layout
from synctalk.avatar.frames import open_frames
from synctalk.avatar.layout import (
    BOXES_FILE,
    FPS,
    FRAMES_ARRAY,
    META_FILE,
    frame_name,
    is_complete,
    read_meta,
    valid_avatar_name,
)


@dataclass
class Avatar:
    """A prepared avatar: metadata, crop boxes and lazily decoded frames."""

    name: str
    path: Path
    fps: int
    width: int
    height: int
    num_frames: int
    boxes: np.ndarray = field(repr=False)  # int32 [N,4]
    frames: Sequence[np.ndarray] = field(repr=False)

    def unet_checkpoint(self, mode: str) -> Path:
        """Where the U-Net of feature mode `mode` lives (it may not exist)."""
        return layout.unet_path(self.path, mode)

    def feature_modes(self) -> list[str]:
        """Feature modes that have a trained U-Net."""
        return layout.feature_modes(self.path)

    def still(self) -> np.ndarray:
        """A representative frame (the first: the recording guidance asks for a closed mouth there)."""
        return np.asarray(self.frames[0])


def load_avatar(path: Path) -> Avatar:
    """Open a prepared avatar folder; FileNotFoundError / ValueError say what is missing or wrong."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"avatar folder {path} does not exist")
    has_meta = (path / META_FILE).is_file()
    has_array = (path / FRAMES_ARRAY).is_file()
    if not has_meta and not has_array:
        raise FileNotFoundError(f"{path} is not an avatar: no {META_FILE} (run `synctalk prepare`)")
    if has_meta:
        meta = read_meta(path)
        if not meta.complete:
            raise ValueError(f"{path}: avatar preparation did not finish (re-run `synctalk prepare`)")
    frames = open_frames(path)
    if has_meta and not has_array:
        name, fps, num_frames = meta.name, meta.fps, meta.num_frames
        width, height = meta.width, meta.height
        folder = path / meta.frames
        for i in (0, num_frames - 1):
            if not (folder / frame_name(i)).is_file():
                raise FileNotFoundError(f"{folder}: frame {frame_name(i)} is missing "
                                        f"({num_frames} expected)")
    else:
        array = np.asarray(frames)
        name, fps, num_frames = (meta.name if has_meta else path.name), FPS, int(array.shape[0])
        height, width = int(array.shape[1]), int(array.shape[2])
    boxes = load_boxes(path, num_frames)
    return Avatar(name=name, path=path, fps=fps, width=width, height=height,
                  num_frames=num_frames, boxes=boxes, frames=frames)


def load_boxes(path: Path, num_frames: int) -> np.ndarray:
    """boxes.npy as int32 [num_frames, 4], checked."""
    file = Path(path) / BOXES_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: crop boxes missing (run `synctalk prepare`)")
    try:
        boxes = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{file}: not a NumPy array ({exc})") from exc
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.integer):
        raise ValueError(f"{file}: expected integer [N,4] boxes, got {boxes.dtype} {list(boxes.shape)}")
    if boxes.shape[0] != num_frames:
        raise ValueError(f"{file}: {boxes.shape[0]} boxes for {num_frames} frames")
    if num_frames and ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise ValueError(f"{file}: holds empty boxes")
    return boxes.astype(np.int32, copy=False)


def is_avatar(path: Path) -> bool:
    """A folder that load_avatar would accept, judged from its files only (cheap)."""
    if (path / FRAMES_ARRAY).is_file():
        return (path / BOXES_FILE).is_file()
    return is_complete(path)


def list_avatars(store: Path) -> list[str]:
    """Names of the prepared avatars in `store`, sorted; [] if the store does not exist."""
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir()
                  if valid_avatar_name(p.name) and p.is_dir() and is_avatar(p))
