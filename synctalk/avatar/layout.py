"""The avatar folder contract, in one place: every file name, the path helpers, avatar.json
and the frames and checkpoints lookups. Other modules ask this one instead of spelling a name.

    <models.avatars_dir>/<name>/
      avatar.json      {"format": "synctalk.avatar/1", "name", "fps": 25, "width", "height",
                        "num_frames", "frames": "frames", "complete": true, ...,
                        "audio_encoders": {mode: the encoder its features came from}}
      frames/          000000.jpg ... full source frames at 25 fps
      boxes.npy        int32 [N,4] square crop boxes (x0, y0, x1, y1), exclusive ends, smoothed
      landmarks.npy    float32 [N,68,2]
      audio.wav        16 kHz mono s16, exactly N x 640 samples
      features_<mode>.npy
      checkpoints/     unet_<mode>.pt (what the renderer loads), unet_<mode>_epochNNN.pt,
                       syncnet_<mode>.pt; beside a checkpoint its ONNX exports
      logs/            training scalars
      cache/training/  crops.npy, boxes.npy, meta.json (the training crop cache)
      .prepare/        an unfinished preparation's resume state

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

FORMAT = "synctalk.avatar/1"
META_FILE = "avatar.json"
BOXES_FILE = "boxes.npy"
LANDMARKS_FILE = "landmarks.npy"
AUDIO_FILE = "audio.wav"
FEATURES_FILE = "features_{mode}.npy"  # per feature mode; "*" as the mode globs them all
FRAMES_DIR = "frames"
FRAMES_ARRAY = "frames.npy"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
TRAINING_CACHE_DIR = ("cache", "training")
CACHE_CROPS_FILE = "crops.npy"
CACHE_BOXES_FILE = BOXES_FILE
CACHE_META_FILE = "meta.json"
PREPARE_STATE_DIR = ".prepare"  # `synctalk prepare`'s resume state, removed when it finishes
# The files whose rewrite makes a loaded avatar stale ("" is the folder itself).
DEFINING_FILES = ("", META_FILE, BOXES_FILE, FRAMES_ARRAY)
FPS = 25
MAX_NAME_LEN = 64
_NAME_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_UNET_RE = re.compile(r"unet_([A-Za-z0-9]+)\.pt")
_EPOCH_RE = re.compile(r"_epoch(\d+)\.pt$")


def valid_avatar_name(name: str) -> bool:
    """Letters, digits, '_', '-', '.'; no leading '.'; 1..64 characters. Such a name is one
    path component that cannot climb out of the avatar store."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LEN
        and _NAME_RE.fullmatch(name) is not None
    )


# ---------------------------------------------------------------- paths


def features_path(avatar_dir: str | Path, mode: str) -> Path:
    return Path(avatar_dir) / FEATURES_FILE.format(mode=mode)


def frames_array_path(avatar_dir: str | Path) -> Path:
    """Frames stored as one uint8 [N,H,W,3] BGR array (small synthetic and test avatars)."""
    return Path(avatar_dir) / FRAMES_ARRAY


def checkpoints_dir(avatar_dir: str | Path) -> Path:
    return Path(avatar_dir) / CHECKPOINTS_DIR


def logs_dir(avatar_dir: str | Path) -> Path:
    """Scalar logs (JSONL, TensorBoard when installed)."""
    return Path(avatar_dir) / LOGS_DIR


def syncnet_path(avatar_dir: str | Path, mode: str) -> Path:
    return checkpoints_dir(avatar_dir) / f"syncnet_{mode}.pt"


def unet_path(avatar_dir: str | Path, mode: str) -> Path:
    """The stable, model-only U-Net checkpoint the renderer loads (it may not exist)."""
    return checkpoints_dir(avatar_dir) / f"unet_{mode}.pt"


def unet_epoch_path(avatar_dir: str | Path, mode: str, epoch: int) -> Path:
    return checkpoints_dir(avatar_dir) / f"unet_{mode}_epoch{epoch:03d}.pt"


def avatar_of_checkpoint(checkpoint: Path) -> Path:
    """The avatar folder a `<avatar>/checkpoints/<file>` belongs to."""
    return Path(checkpoint).resolve().parent.parent


def training_cache_dir(avatar_dir: str | Path) -> Path:
    return Path(avatar_dir).joinpath(*TRAINING_CACHE_DIR)


# ---------------------------------------------------------------- lookups


def mode_for_avatar(configured: str, trained: Sequence[str]) -> str:
    """`configured` when the avatar has a U-Net for it (or none yet), else the first mode it
    has one for: an avatar trained in one mode is used in that mode without being told."""
    if not trained or configured in trained:
        return configured
    return sorted(trained)[0]


def feature_modes(avatar_dir: str | Path) -> list[str]:
    """Feature modes that have a trained U-Net."""
    folder = checkpoints_dir(avatar_dir)
    if not folder.is_dir():
        return []
    return sorted(m.group(1) for p in folder.iterdir() if (m := _UNET_RE.fullmatch(p.name)))


def epoch_of(checkpoint: Path) -> int:
    """The epoch number of a `unet_<mode>_epochNNN.pt`; ValueError for any other name."""
    found = _EPOCH_RE.search(Path(checkpoint).name)
    if found is None:
        raise ValueError(f"{checkpoint}: not a per-epoch checkpoint")
    return int(found.group(1))


def epoch_checkpoints(avatar_dir: str | Path, mode: str) -> list[Path]:
    """Per-epoch U-Net checkpoints, oldest first."""
    found = checkpoints_dir(avatar_dir).glob(f"unet_{mode}_epoch*.pt")
    return sorted((p for p in found if _EPOCH_RE.search(p.name)), key=epoch_of)


def frame_name(index: int) -> str:
    """File name of frame `index` inside the frames folder."""
    return f"{index:06d}.jpg"


def count_frames(folder: Path) -> int:
    """Number of consecutive frames 000000.jpg, 000001.jpg, ... present in `folder`."""
    with os.scandir(folder) as it:
        names = {entry.name for entry in it}
    n = 0
    while frame_name(n) in names:
        n += 1
    return n


def has_frames_and_boxes(avatar_dir: str | Path) -> bool:
    """Crop boxes exist, and frames either as an array or behind an avatar.json (cheap)."""
    path = Path(avatar_dir)
    frames = (path / FRAMES_ARRAY).is_file() or (path / META_FILE).is_file()
    return frames and (path / BOXES_FILE).is_file()


def is_complete(avatar_dir: str | Path) -> bool:
    """avatar.json says preparation finished, and the crop boxes exist (cheap)."""
    try:
        return read_meta(Path(avatar_dir)).complete and (Path(avatar_dir) / BOXES_FILE).is_file()
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------- avatar.json


@dataclass
class AvatarMeta:
    """The contents of avatar.json; unknown keys are kept in `extra`."""

    name: str
    width: int
    height: int
    num_frames: int
    fps: int = FPS
    frames: str = FRAMES_DIR
    complete: bool = False
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {"format": data.pop("format"), **data, **extra}


_META_KEYS = {"format", "name", "width", "height", "num_frames", "fps", "frames", "complete"}
# {mode: {"mode", "trained", "checkpoint", "sha256"}}: the audio encoder each mode's features
# (and so its SyncNet and U-Net) were made with; absent in avatars trained before it existed.
AUDIO_ENCODERS_KEY = "audio_encoders"


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
            frames=str(data.get("frames", FRAMES_DIR)),
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


def audio_encoder_record(avatar_dir: Path, mode: str) -> dict[str, Any] | None:
    """The audio encoder avatar.json records for `mode`; None when none is recorded (no
    avatar.json, or trained before the record existed, like the bundled demo)."""
    if not (Path(avatar_dir) / META_FILE).is_file():
        return None
    records = read_meta(avatar_dir).extra.get(AUDIO_ENCODERS_KEY)
    record = records.get(mode) if isinstance(records, dict) else None
    return record if isinstance(record, dict) else None


def record_audio_encoder(avatar_dir: Path, mode: str, record: dict[str, Any]) -> bool:
    """Keep in avatar.json which audio encoder `mode` was trained against, so anyone can see
    it; False when the folder has no avatar.json (tiny test avatars)."""
    try:
        meta = read_meta(avatar_dir)
    except FileNotFoundError:
        return False
    records = meta.extra.get(AUDIO_ENCODERS_KEY)
    meta.extra[AUDIO_ENCODERS_KEY] = {**(records if isinstance(records, dict) else {}),
                                      mode: record}
    write_meta(avatar_dir, meta)
    return True
