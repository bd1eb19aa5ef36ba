"""The avatar folder (`<models.avatars_dir>/<name>/`) and its `avatar.json`.

    avatar.json      {"format": "synctalk.avatar/1", "name", "fps": 25, "width", "height",
                      "num_frames", "frames": "frames", "complete": true, ...}
    frames/          000000.jpg ... full source frames at 25 fps
    boxes.npy        int32 [N,4] square crop boxes (x0, y0, x1, y1), exclusive ends, smoothed
    landmarks.npy    float32 [N,68,2]
    audio.wav        16 kHz mono s16, exactly N x 640 samples
    features_<mode>.npy, checkpoints/unet_<mode>.pt

`synctalk prepare` writes avatar.json last, with "complete": true, so a folder whose
preparation failed or was interrupted is never taken for an avatar. Tiny test avatars may
instead hold `frames.npy` (uint8 [N,H,W,3] BGR) and `boxes.npy` without an avatar.json.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synctalk.avatar.frames import FRAMES_ARRAY, open_frames

FORMAT = "synctalk.avatar/1"
META_FILE = "avatar.json"
BOXES_FILE = "boxes.npy"
LANDMARKS_FILE = "landmarks.npy"
AUDIO_FILE = "audio.wav"
FPS = 25
MAX_NAME_LEN = 64
_NAME_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


def valid_avatar_name(name: str) -> bool:
    """Letters, digits, '_', '-', '.'; no leading '.'; 1..64 characters. Such a name is one
    path component that cannot climb out of the avatar store."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LEN
        and _NAME_RE.fullmatch(name) is not None
    )


@dataclass
class AvatarMeta:
    """The contents of avatar.json; unknown keys are kept in `extra`."""

    name: str
    width: int
    height: int
    num_frames: int
    fps: int = FPS
    frames: str = "frames"
    complete: bool = False
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {"format": data.pop("format"), **data, **extra}


_META_KEYS = {"format", "name", "width", "height", "num_frames", "fps", "frames", "complete"}


def read_meta(avatar_dir: Path) -> AvatarMeta:
    """Parse and check avatar.json; ValueError names the problem."""
    path = Path(avatar_dir) / META_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
    try:
        meta = AvatarMeta(
            name=str(data["name"]),
            width=_positive_int(data["width"]),
            height=_positive_int(data["height"]),
            num_frames=_positive_int(data["num_frames"]),
            fps=_positive_int(data.get("fps", FPS)),
            frames=str(data.get("frames", "frames")),
            complete=data.get("complete") is True,
            extra={k: v for k, v in data.items() if k not in _META_KEYS},
        )
    except KeyError as exc:
        raise ValueError(f"{path}: missing field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not valid_avatar_name(meta.frames) or meta.frames.endswith(".npy"):
        raise ValueError(f"{path}: bad frames folder name {meta.frames!r}")
    return meta


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def write_meta(avatar_dir: Path, meta: AvatarMeta) -> Path:
    """Write avatar.json atomically (temporary file, fsync, rename)."""
    path = Path(avatar_dir) / META_FILE
    tmp = path.with_name(f".{META_FILE}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta.to_json(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


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
        return self.path / "checkpoints" / f"unet_{mode}.pt"

    def feature_modes(self) -> list[str]:
        """Feature modes that have a trained U-Net."""
        folder = self.path / "checkpoints"
        if not folder.is_dir():
            return []
        found = re.compile(r"unet_([A-Za-z0-9]+)\.pt")
        return sorted(m.group(1) for p in folder.iterdir() if (m := found.fullmatch(p.name)))

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
            if not (folder / f"{i:06d}.jpg").is_file():
                raise FileNotFoundError(f"{folder}: frame {i:06d}.jpg is missing ({num_frames} expected)")
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
    try:
        return read_meta(path).complete and (path / BOXES_FILE).is_file()
    except (OSError, ValueError):
        return False


def list_avatars(store: Path) -> list[str]:
    """Names of the prepared avatars in `store`, sorted; [] if the store does not exist."""
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir()
                  if valid_avatar_name(p.name) and p.is_dir() and is_avatar(p))
