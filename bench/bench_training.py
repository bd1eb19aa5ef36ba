"""Training throughput: samples per second of one U-Net step and one SyncNet step, of the
training data paths (DataLoader against the training cache), and the projected time of a
5-minute avatar with the default profile.

    .venv/bin/python -m bench.bench_training [--batch 2] [--repeats 3] [--device cpu|auto]
                                             [--frames 64] [--data-only] [--compile]

A U-Net step is what `UNetTrainer.train_step` does (forward, L1 + 10 x sync + SSIM through
the frozen full-width SyncNet, backward, Adam); a SyncNet step is `SyncNetTrainer.train_step`
(full width, BCE on a half-positive batch). Inputs are random tensors of the real shapes, so
the figures exclude data loading (measured by the data rows below).
The `demo` rows are the bundled demo avatar's quarter-width networks; the layout rows time
the bare U-Net step (L1, backward, Adam) in NCHW and in the channels-last layout the
trainers use.

The data rows cut default-profile U-Net batches from a 1080p JPEG avatar (the demo frames on
a 1920x1080 canvas): today's DataLoader (decode and crop in the profile's workers) against
the training cache, on the CPU always and on the GPU when torch sees one. With a GPU the
default profile's own steps (cached batches, AMP, fused Adam, channels-last, `--compile`)
give the projection's rates; on the CPU the synthetic steps above at `--batch` do.
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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import timing
from bench.training_data import FIVE_MINUTES, hd_avatar, measure_data_paths, project_minutes
from synctalk.models.syncnet import SyncNet
from training.checkpoints import atomic_save, training_state
from training.datasets import AvatarArrays
from training.distributed import DistContext, init_distributed
from training.loop import EpochTrainer
from training.profiles import Profile, get_profile
from training.syncnet_train import SyncNetTrainer
from training.unet_train import UNetTrainer


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """`bench.timing.median_seconds`, waiting for the GPU's queued work when there is one."""
    return timing.median_seconds(fn, repeats,
                                 torch.cuda.synchronize if torch.cuda.is_available() else None)


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
                           metrics={"heldout_accuracy": 1.0}, finished=True, world_size=1,
                           rank=0)  # past the sync gate, so the U-Net step has its sync term
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
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="device of the synthetic step rows (the data rows run on the CPU "
                             "and, when torch sees one, on the GPU)")
    parser.add_argument("--frames", type=int, default=512 if torch.cuda.is_available() else 64,
                        help="1080p frames of the data-path avatar (and of the GPU steps)")
    parser.add_argument("--data-only", action="store_true",
                        help="skip the synthetic step rows and the projection")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks of the GPU steps")
    args = parser.parse_args(argv)

    ctx = init_distributed(args.device)
    b = args.batch
    print(f"# bench_training: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {ctx.device}")
    print(f"# command: {' '.join([sys.executable, '-m', 'bench.bench_training', *(argv or sys.argv[1:])])}")

    def report(label: str, seconds: float) -> None:
        print(f"{label:<40} {seconds:>9.3f} {b / seconds:>10.2f}")

    default = get_profile("default")
    rates: dict[str, float] = {}
    if not args.data_only:
        rates = step_rows(args, ctx, default, report)
    with tempfile.TemporaryDirectory() as tmp:
        data_rows(Path(tmp), args, default, rates)
    return 0


def step_rows(args: argparse.Namespace, ctx: DistContext, default: Profile,
              report: Callable[[str, float], None]) -> dict[str, float]:
    """The synthetic step rows; returns samples/s of the full SyncNet and U-Net steps."""
    b = args.batch
    print(f"# batch {b}, median of {args.repeats} steps after one warm-up; synthetic inputs")
    print(f"{'step':<40} {'median s':>9} {'samples/s':>10}")
    rates = {}
    default = replace(default, cached_data=False)  # batches are given: no cache to build
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sync = SyncNetTrainer(root, placeholder_avatar(32), "ave", default, ctx)
        face, audio = torch.rand(b, 3, 320, 320), torch.randn(b, 32, 16, 16)
        label = (torch.arange(b) % 2 == 0).float()
        seconds = median_seconds(step_runner(sync, [face, audio, label]), args.repeats)
        rates["syncnet"] = b / seconds
        report("syncnet step (width 1.0)", seconds)
        del sync
        unet = UNetTrainer(root, placeholder_avatar(32), "ave", default, ctx,
                           syncnet_checkpoint=saved_syncnet(root))
        inp, target = torch.rand(b, 6, 320, 320), torch.rand(b, 3, 320, 320)
        seconds = median_seconds(step_runner(unet, [inp, target, audio]), args.repeats)
        rates["unet"] = b / seconds
        report("unet step (L1 + sync + SSIM)", seconds)
        unet.loss.syncnet = None
        report("unet step without sync loss (L1 + SSIM)", median_seconds(
            step_runner(unet, [inp, target, audio]), args.repeats))
        del unet
        demo = replace(get_profile("demo"), cached_data=False)
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
    return rates


def data_rows(root: Path, args: argparse.Namespace, default: Profile,
              cpu_rates: dict[str, float]) -> None:
    """Loader against cache on each device; GPU steps; the 5-minute projection."""
    data = hd_avatar(root / "frames", args.frames)
    devices = [torch.device("cpu")]
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    p = default.unet
    print(f"# data path: U-Net batches of {p.batch_size} (default profile) from {args.frames} "
          f"1080p JPEG frames; loader: {min(p.workers, os.cpu_count() or 1)} workers; median "
          f"of {args.repeats} epochs")
    print(f"{'data path':<40} {'samples/s':>10}")
    for device in devices:
        ctx = DistContext(0, 1, 0, device)
        r = measure_data_paths(root / f"avatar_{device.type}", data, default, ctx, args.repeats)
        print(f"{'loader (decode + crop in workers), ' + device.type:<40} {r.loader:>10.1f}")
        where = "device memory" if r.resident else "memory-mapped host file"
        print(f"{'cached (' + where + '), ' + device.type:<40} {r.cached:>10.1f}")
        print(f"# {device.type}: cached / loader samples/s: {r.cached / r.loader:.1f}x; cache "
              f"build {1000 * r.build_s_per_frame:.1f} ms/frame (once per avatar)")
        rates = cpu_rates
        if device.type == "cuda" and not args.data_only:
            rates = gpu_step_rates(root, data, default, ctx, args)
        if rates:
            print_projection(default, rates, r.build_s_per_frame, device.type)


def gpu_step_rates(root: Path, data: AvatarArrays, default: Profile, ctx: DistContext,
                   args: argparse.Namespace) -> dict[str, float]:
    """Samples/s of the default profile's own steps on the GPU, batches from the cache."""
    profile = replace(default, compile=args.compile)
    avatar = root / "gpu_steps"
    rates = {}
    unet = UNetTrainer(avatar, data, "ave", profile, ctx,
                       syncnet_checkpoint=saved_syncnet(root))
    rates["unet"] = trainer_rate(unet, args.repeats)
    print(f"{'gpu unet step, batch ' + str(profile.unet.batch_size):<40} {rates['unet']:>10.1f}")
    del unet
    sync = SyncNetTrainer(avatar, data, "ave", profile, ctx)
    rates["syncnet"] = trainer_rate(sync, args.repeats)
    print(f"{'gpu syncnet step, batch ' + str(profile.syncnet.batch_size):<40} "
          f"{rates['syncnet']:>10.1f}")
    return rates


def trainer_rate(trainer: EpochTrainer, repeats: int) -> float:
    """Samples/s of whole epochs of cached batches through `train_step` (one warm-up epoch)."""
    trainer.model.train()
    cuda = trainer.ctx.device.type == "cuda"
    times, samples = [], 0
    for epoch in range(repeats + 1):
        trainer.sampler.set_epoch(epoch)
        trainer.dataset.set_epoch(epoch)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        count = 0
        for batch in trainer.loader:
            trainer.train_step(batch)
            count += len(batch[0])
        if cuda:
            torch.cuda.synchronize()
        if epoch:
            times.append(time.perf_counter() - start)
            samples = count
    return samples / statistics.median(times)


def print_projection(default: Profile, rates: dict[str, float], build_s_per_frame: float,
                     device: str) -> None:
    m = project_minutes(default, rates["syncnet"], rates["unet"], build_s_per_frame)
    print(f"# projected, default profile, 5-minute avatar ({FIVE_MINUTES} frames) on {device}: "
          f"{m['total']:.1f} min = cache {m['cache']:.1f} + SyncNet {m['syncnet']:.1f} "
          f"({default.syncnet.epochs} epochs at {rates['syncnet']:.1f} pairs/s) + U-Net "
          f"{m['unet']:.1f} ({default.unet.epochs} epochs at {rates['unet']:.1f} samples/s)")


if __name__ == "__main__":
    sys.exit(main())
