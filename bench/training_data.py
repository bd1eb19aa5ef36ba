"""Training data paths for bench_training: today's DataLoader against the training cache,
on a 1080p JPEG avatar made from the bundled demo frames, and the 5-minute projection."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from synctalk.avatar.frames import JpegFrames
from synctalk.avatar.layout import BOXES_FILE, FRAMES_DIR, frame_name
from training.cache import build_cache, open_cache
from training.cached_batches import DeviceCache, cached_loader
from training.datasets import AvatarArrays, UNetDataset
from training.distributed import DistContext
from training.loop import make_loader
from training.profiles import Profile

DEMO = Path(__file__).resolve().parents[1] / "assets" / "avatars" / "demo"
FIVE_MINUTES = 7_500  # frames at 25 fps
HD = (1080, 1920)


def hd_avatar(folder: Path, frames: int) -> AvatarArrays:
    """`frames` 1080p JPEGs (quality 95): the demo's 512 px frames pasted onto a 1920x1080
    upscale of themselves (a natural picture, so decoding costs what a video frame's does);
    boxes moved with them."""
    source = JpegFrames(DEMO / FRAMES_DIR, 250)
    boxes = np.load(DEMO / BOXES_FILE).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    oy, ox = 300, 700
    for i in range(frames):
        face = source[i % 250]
        canvas = cv2.resize(face, (HD[1], HD[0]), interpolation=cv2.INTER_LINEAR)
        canvas[oy:oy + 512, ox:ox + 512] = face
        cv2.imwrite(str(folder / frame_name(i)), canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    shifted = boxes[np.arange(frames) % 250] + np.array([ox, oy, ox, oy], np.float32)
    features = np.random.default_rng(1).standard_normal((frames, 32, 16, 16)).astype(np.float32)
    return AvatarArrays(JpegFrames(folder, frames), shifted, features)


def epoch_rate(batches: Iterable[list[torch.Tensor]], device: torch.device) -> float:
    """Samples/s of one pass, each batch moved to the device as a training step would."""
    start = time.perf_counter()
    count = 0
    for batch in batches:
        moved = [t.to(device, non_blocking=True) for t in batch]
        count += len(moved[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - start)


@dataclass
class DataRates:
    loader: float  # samples/s, DataLoader with the profile's workers
    cached: float  # samples/s, batches from the cache on the device
    build_s_per_frame: float  # one-off: cropping a frame into the cache
    resident: bool


def measure_data_paths(root: Path, data: AvatarArrays, profile: Profile, ctx: DistContext,
                       repeats: int) -> DataRates:
    """U-Net batches of the profile's size, one epoch over `data` each, median of `repeats`
    (the loader restarts its workers every epoch, as in training)."""
    p = profile.unet
    dataset = UNetDataset(data, profile.seed, None)
    loader, sampler = make_loader(dataset, p.batch_size, ctx, seed=profile.seed,
                                  workers=p.workers, shuffle=True)
    loader_rates = []
    for epoch in range(repeats):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        loader_rates.append(epoch_rate(loader, ctx.device))
    start = time.perf_counter()
    build_cache(root, data)
    build = (time.perf_counter() - start) / len(data)
    source = DeviceCache(open_cache(root, data), ctx.device)
    cached, cached_sampler = cached_loader(dataset, source, p.batch_size, ctx,
                                           seed=profile.seed, shuffle=True)
    cached_rates = []
    for epoch in range(repeats + 1):  # the first pass warms the page cache and the device
        cached_sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        cached_rates.append(epoch_rate(cached, ctx.device))
    return DataRates(statistics.median(loader_rates), statistics.median(cached_rates[1:]),
                     build, source.resident)


def project_minutes(profile: Profile, syncnet_rate: float, unet_rate: float,
                    build_s_per_frame: float, frames: int = FIVE_MINUTES) -> dict[str, float]:
    """Minutes for `frames` with the profile: cache build, SyncNet (a positive and a negative
    per training frame, held-out pairs forward only at about a third of a step), U-Net."""
    s, u = profile.syncnet, profile.unet
    held = int(round(frames * s.holdout_fraction))
    sync_samples = s.epochs * 2 * ((frames - held) + held / 3)
    out = {"cache": frames * build_s_per_frame / 60,
           "syncnet": sync_samples / syncnet_rate / 60,
           "unet": u.epochs * frames / unet_rate / 60}
    out["total"] = sum(out.values())
    return out
