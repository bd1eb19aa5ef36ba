"""Training throughput: samples per second of one U-Net step and one SyncNet step.

    .venv/bin/python -m bench.bench_training [--batch 2] [--repeats 3] [--device cpu]

A U-Net step is what `UNetTrainer.train_step` does (forward, L1 + 10 x sync + SSIM through
the frozen full-width SyncNet, backward, Adam); a SyncNet step is `SyncNetTrainer.train_step`
(full width, BCE on a half-positive batch). Inputs are random tensors of the real shapes, so
the figures exclude data loading (crops run in DataLoader workers during training).
The `demo` rows are the bundled demo avatar's quarter-width networks; the layout rows time
the bare U-Net step (L1, backward, Adam) in NCHW and in the channels-last layout the
trainers use.
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


def saved_syncnet(directory: Path, width: float = 1.0) -> Path:
    model = SyncNet("ave", width)
    state = training_state(kind="syncnet", model=model,
                           optimizer=torch.optim.Adam(model.parameters()),
                           scaler=torch.amp.GradScaler("cpu", enabled=False), epoch=1, step=0,
                           feature_mode="ave",
                           config={"syncnet": {"audio_mode": "ave", "width": width}},
                           metrics={}, finished=True, world_size=1, rank=0)
    path = directory / f"syncnet_{width}.pt"
    atomic_save(state, path)
    return path


def step_runner(trainer: EpochTrainer, batch: list[torch.Tensor]) -> Callable[[], object]:
    trainer.model.train()
    return lambda: trainer.train_step(batch)


def layout_runner(layout: torch.memory_format, batch: int,
                  device: torch.device) -> Callable[[], object]:
    """A bare full-width U-Net step (L1, backward, Adam) with weights and inputs in `layout`."""
    from synctalk.models.unet import UNet328

    model = UNet328(audio_mode="ave").to(device, memory_format=layout).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inp = torch.rand(batch, 6, 320, 320, device=device).contiguous(memory_format=layout)
    target = torch.rand(batch, 3, 320, 320, device=device)
    audio = torch.randn(batch, 32, 16, 16, device=device)

    def step() -> None:
        loss = torch.nn.functional.l1_loss(model(inp, audio), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


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
                           syncnet_checkpoint=saved_syncnet(root))
        inp, target = torch.rand(b, 6, 320, 320), torch.rand(b, 3, 320, 320)
        report("unet step (L1 + sync + SSIM)", median_seconds(
            step_runner(unet, [inp, target, audio]), args.repeats))
        unet.loss.syncnet = None
        report("unet step without sync loss (L1 + SSIM)", median_seconds(
            step_runner(unet, [inp, target, audio]), args.repeats))
        del unet
        demo = get_profile("demo")
        small = UNetTrainer(root, placeholder_avatar(32), "ave", demo, ctx,
                            syncnet_checkpoint=saved_syncnet(root, demo.syncnet.width))
        report("demo unet step (width 0.25, + 0.3 sync)", median_seconds(
            step_runner(small, [inp, target, audio]), args.repeats))
        del small
    nchw = median_seconds(layout_runner(torch.contiguous_format, b, ctx.device), args.repeats)
    report("layout: unet step, NCHW", nchw)
    nhwc = median_seconds(layout_runner(torch.channels_last, b, ctx.device), args.repeats)
    report("layout: unet step, channels-last", nhwc)
    print(f"# channels-last / NCHW step time: {nhwc / nchw:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
