"""Tiny synthetic avatars, profiles and checkpoints for the training tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import torch

from synctalk.avatar.layout import syncnet_path
from synctalk.models.syncnet import SyncNet
from training.datasets import AvatarArrays
from training.distributed import DistContext
from training.profiles import get_profile

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
FRAME = 96
BOX = (16, 30, 80, 94)


def synthetic_avatar(n: int = 24, seed: int = 0) -> AvatarArrays:
    """Frames whose mouth height and audio features share one random value per frame."""
    rng = np.random.default_rng(seed)
    opening = rng.uniform(0, 1, n)
    frames = np.empty((n, FRAME, FRAME, 3), np.uint8)
    frames[:] = (60, 90, 140)
    for i in range(n):
        cv2.ellipse(frames[i], (48, 44), (30, 38), 0, 0, 360, (120, 160, 210), -1)
        cv2.ellipse(frames[i], (48, 64), (12, int(2 + 9 * opening[i])), 0, 0, 360,
                    (40, 20, 120), -1)
    boxes = np.tile(np.array(BOX, np.float32), (n, 1))
    pattern = rng.standard_normal((32, 16, 16)).astype(np.float32)
    noise = 0.05 * rng.standard_normal((n, 32, 16, 16)).astype(np.float32)
    features = opening[:, None, None, None].astype(np.float32) * pattern + noise
    return AvatarArrays(frames, boxes, features)


def tiny(**unet: object):
    profile = get_profile("tiny")
    return dataclasses.replace(profile, unet=dataclasses.replace(profile.unet, **unet))


def save_untrained_syncnet(avatar_dir: Path, mode: str = "ave") -> Path:
    """A finished-looking tiny SyncNet checkpoint, so U-Net tests skip SyncNet training."""
    from training.checkpoints import atomic_save, training_state

    torch.manual_seed(0)
    model = SyncNet(mode, get_profile("tiny").syncnet.width)
    optimizer = torch.optim.Adam(model.parameters())
    state = training_state(kind="syncnet", model=model, optimizer=optimizer,
                           scaler=torch.amp.GradScaler("cpu", enabled=False), epoch=1, step=0,
                           feature_mode=mode,
                           config={"syncnet": {"audio_mode": mode, "width": model.width}},
                           metrics={}, finished=True, world_size=1, rank=0)
    path = syncnet_path(avatar_dir, mode)
    atomic_save(state, path)
    return path


def write_avatar_folder(avatar_dir: Path, n: int = 24) -> Path:
    """A prepared avatar folder: frames, crop boxes and `ave` features as arrays."""
    avatar = synthetic_avatar(n)
    avatar_dir.mkdir(parents=True, exist_ok=True)
    np.save(avatar_dir / "frames.npy", np.asarray(avatar.frames))
    np.save(avatar_dir / "boxes.npy", avatar.boxes)
    np.save(avatar_dir / "features_ave.npy", avatar.features)
    return avatar_dir
