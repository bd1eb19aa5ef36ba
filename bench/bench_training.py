"""Training throughput: samples per second of one U-Net step and one SyncNet step.

    .venv/bin/python -m bench.bench_training [--batch 2] [--repeats 3] [--device cpu]

A U-Net step is what `UNetTrainer.train_step` does (forward, L1 + 10 x sync + SSIM through
the frozen full-width SyncNet, backward, Adam); a SyncNet step is `SyncNetTrainer.train_step`
(full width, BCE on a half-positive batch). Inputs are random tensors of the real shapes, so
the figures exclude data loading (crops run in DataLoader workers during training).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from synctalk.models.syncnet import SyncNet
from training.checkpoints import atomic_save, training_state
from training.datasets import AvatarArrays
from training.distributed import init_distributed
from training.loop import EpochTrainer
from training.profiles import get_profile
from training.syncnet_train import SyncNetTrainer
from training.unet_train import UNetTrainer


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def placeholder_avatar(n: int) -> AvatarArrays:
    """Frames are never read here (batches are synthetic); the trainers only need the sizes."""
    frames = np.zeros((n, 8, 8, 3), np.uint8)
    boxes = np.tile(np.array([0, 0, 8, 8], np.float32), (n, 1))
    return AvatarArrays(frames, boxes, np.zeros((n, 32, 16, 16), np.float32))


def full_width_syncnet(directory: Path) -> Path:
    model = SyncNet("ave", 1.0)
    state = training_state(kind="syncnet", model=model,
                           optimizer=torch.optim.Adam(model.parameters()),
                           scaler=torch.amp.GradScaler("cpu", enabled=False), epoch=1, step=0,
                           feature_mode="ave",
                           config={"syncnet": {"audio_mode": "ave", "width": 1.0}}, metrics={},
                           finished=True, world_size=1, rank=0)
    path = directory / "syncnet.pt"
    atomic_save(state, path)
    return path


def step_runner(trainer: EpochTrainer, batch: list[torch.Tensor]) -> Callable[[], object]:
    trainer.model.train()
    return lambda: trainer.train_step(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = parser.parse_args(argv)

    ctx = init_distributed(args.device)
    b = args.batch
    print(f"# bench_training: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {ctx.device}")
    print(f"# command: {' '.join([sys.executable, '-m', 'bench.bench_training', *(argv or sys.argv[1:])])}")
    print(f"# batch {b}, median of {args.repeats} steps after one warm-up; synthetic inputs")
    print(f"{'step':<40} {'median s':>9} {'samples/s':>10}")

    def report(label: str, seconds: float) -> None:
        print(f"{label:<40} {seconds:>9.3f} {b / seconds:>10.2f}")

    default = get_profile("default")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sync = SyncNetTrainer(root, placeholder_avatar(32), "ave", default, ctx)
        face, audio = torch.rand(b, 3, 320, 320), torch.randn(b, 32, 16, 16)
        label = (torch.arange(b) % 2 == 0).float()
        report("syncnet step (width 1.0)", median_seconds(
            step_runner(sync, [face, audio, label]), args.repeats))
        del sync
        unet = UNetTrainer(root, placeholder_avatar(32), "ave", default, ctx,
                           syncnet_checkpoint=full_width_syncnet(root))
        inp, target = torch.rand(b, 6, 320, 320), torch.rand(b, 3, 320, 320)
        report("unet step (L1 + sync + SSIM)", median_seconds(
            step_runner(unet, [inp, target, audio]), args.repeats))
        unet.loss.syncnet = None
        report("unet step without sync loss (L1 + SSIM)", median_seconds(
            step_runner(unet, [inp, target, audio]), args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
