"""Tiny avatars for renderer tests and benchmarks, built in a temporary folder.

An avatar here is `frames.npy` (uint8 [N,H,W,3] BGR, smooth texture that drifts from frame
to frame like a slowly moving head) or, with `jpeg=True`, the prepared layout (`avatar.json`
+ `frames/NNNNNN.jpg`), `boxes.npy` (int32 square boxes over the lower middle,
jittering by a pixel or two as smoothed face boxes do) and `checkpoints/unet_<mode>.pt` in
the dict the trainer saves (`training.checkpoints.inference_state` keys) with a freshly
initialised U-Net of the given width (seeded, so every build is identical).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from synctalk.avatar import AvatarMeta, write_meta
from synctalk.avatar.layout import unet_path
from synctalk.models.unet import UNet328
from training.checkpoints import FORMAT, atomic_save


def textured_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Low-frequency BGR texture (bilinear resampling keeps it smooth) drifting per frame."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 3)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = max(height, width) / 256.0
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        shift = 2.0 * np.pi * i / max(n, 1)
        chans = [
            120 + 55 * np.sin(2 * np.pi * x / (97 * scale) + phases[k] + shift)
            + 40 * np.cos(2 * np.pi * (y / (83 * scale) + 0.3 * k) - 0.5 * shift)
            for k in range(3)
        ]
        out[i] = np.clip(np.rint(np.stack(chans, axis=-1)), 0, 255)
    return out


def face_boxes(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Square boxes of side ~height/2 over the lower middle, with a small per-frame jitter."""
    rng = np.random.default_rng(seed + 1)
    side = height // 2
    cx, cy = width // 2, height // 2 + height // 8
    jitter = rng.integers(-2, 3, size=(n, 2))
    x0 = cx - side // 2 + jitter[:, 0]
    y0 = cy - side // 2 + jitter[:, 1]
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.int32)


def unet_checkpoint(mode: str = "ave", width: float = 0.125, seed: int = 0) -> dict:
    """A project checkpoint dict ({"format", "kind", "model", "feature_mode", "config"})."""
    torch.manual_seed(seed)
    model = UNet328(mode, width).eval()
    return {
        "format": FORMAT,
        "kind": "unet",
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "feature_mode": mode,
        "config": {"width": width},
        "epoch": 0,
        "step": 0,
    }


def make_avatar(
    store: Path,
    name: str = "tiny",
    *,
    num_frames: int = 12,
    height: int = 256,
    width: int = 256,
    unet_width: float = 0.125,
    modes: tuple[str, ...] = ("ave",),
    seed: int = 0,
    jpeg: bool = False,
) -> Path:
    """Write an avatar folder `store/name` and return its path."""
    path = Path(store) / name
    path.mkdir(parents=True, exist_ok=True)
    frames = textured_frames(num_frames, height, width, seed)
    if jpeg:
        folder = path / "frames"
        folder.mkdir(exist_ok=True)
        for i, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"{i:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    else:
        np.save(path / "frames.npy", frames)
    np.save(path / "boxes.npy", face_boxes(num_frames, height, width, seed))
    for mode in modes:
        atomic_save(unet_checkpoint(mode, unet_width, seed), unet_path(path, mode))
    if jpeg:
        write_meta(path, AvatarMeta(name=name, width=width, height=height,
                                    num_frames=num_frames, complete=True))
    return path


def make_1080p_avatar(store: Path, name: str = "hd", num_frames: int = 12,
                      unet_width: float = 1.0, jpeg: bool = True) -> Path:
    """A 1920x1080 avatar (JPEG frames, as `synctalk prepare` writes them) with a full-width
    U-Net (random weights: fine for timing)."""
    return make_avatar(store, name, num_frames=num_frames, height=1080, width=1920,
                       unet_width=unet_width, jpeg=jpeg)


def speech_with_pauses(seconds: float = 2.0, lead: float = 0.4, tail: float = 0.3) -> np.ndarray:
    """`seconds` of 16 kHz audio: silence, real speech (piper joe), silence; on the s16 grid."""
    from tests.support.audio import speech_16k

    n, n_lead, n_tail = (int(round(s * 16000)) for s in (seconds, lead, tail))
    audio = np.zeros(n, np.float32)
    audio[n_lead : n - n_tail] = speech_16k()[: n - n_lead - n_tail]
    return audio


def avatar_store(root: Path, other: str, **shape: int) -> Path:
    """`root` as an avatar store holding the default "tiny" avatar and `other`, made with
    `shape` (make_avatar's num_frames, height, width, seed): two sizes for every path."""
    make_avatar(root, "tiny")
    make_avatar(root, other, **shape)
    return root
