"""U-Net frames/s on this machine: eager torch, ONNX Runtime fp32 and int8, batch 1 and 8.

    .venv/bin/python -m bench.bench_unet [--repeats 9] [--batches 1 8] [--threads 2]
        [--train-steps 0] [--checkpoint PATH] [--no-torch] [--no-profile]

The network is the full-width U-Net (12.19 M parameters, 4.89 GMAC per frame). Without
`--checkpoint` its weights are seeded and its BatchNorm statistics are measured on a
synthetic avatar (face-like frames cropped by `kernels.crop_mask`, features that follow the
mouth), so activations keep a trained network's scale; `--train-steps N` first trains it N
Adam steps on that avatar (about 10 s a step here), which makes the int8 quality figure
meaningful. With `--checkpoint` (a file inside an avatar folder) the avatar's own crops
calibrate and check int8, as the runtime does.

Every variant runs round-robin in the same loop, so other work on the machine slows them
alike; medians per call, fps = batch / median. Eager torch runs at batch 1 only (at batch 8
it alone would take minutes); narrower U-Nets (`--widths`) and ORT on one thread are timed
at batch 1 beside the full-width ones. The per-stage profile (ONNX Runtime's own
node timings, batch 1) shows where the time goes.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synctalk.models.int8 import (
    INT8_MAX_MEAN_ABS_DIFF,
    INT8_RECIPES,
    Calibration,
    avatar_calibration,
    int8_quality,
    quantize_int8,
)
from synctalk.models.onnx_export import unet_onnx_bytes
from synctalk.models.runners import OrtUNetRunner, TorchUNetRunner
from synctalk.models.unet import UNet328, count_parameters, load_unet

FRAMES = 48


def synthetic_avatar(n: int = FRAMES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """U-Net inputs [n,6,320,320] of a drawn face whose mouth opening drives its features."""
    import cv2

    from kernels import crop_mask

    rng = np.random.default_rng(seed)
    opening = rng.uniform(0, 1, n)
    yy = np.mgrid[0:328, 0:328][0].astype(np.float32)
    texture = cv2.GaussianBlur(rng.normal(0, 10, (328, 328, 3)).astype(np.float32), (0, 0), 3)
    skin = (120.0, 150.0, 200.0)
    frames = []
    for i in range(n):
        f = np.empty((328, 328, 3), np.float32)
        f[:] = (70, 90, 120)
        f += ((yy - 164) * 0.15)[..., None]
        cx, cy = 164 + int(rng.integers(-4, 5)), 44 + int(rng.integers(-4, 5))
        cv2.ellipse(f, (cx, cy), (150, 230), 0, 0, 360, skin, -1)
        f += texture
        cv2.ellipse(f, (cx, cy + 170), (55, int(4 + 35 * opening[i])), 0, 0, 360,
                    (50, 40, 130), -1)
        cv2.ellipse(f, (cx, cy + 170 - int(2 + 30 * opening[i])), (40, 5), 0, 0, 360,
                    (225, 228, 235), -1)
        f += rng.normal(0, 3, f.shape)
        frames.append(np.clip(cv2.GaussianBlur(f, (3, 3), 0.8), 0, 255).astype(np.uint8))
    image = crop_mask(frames, np.tile(np.array([0, 0, 328, 328], np.int32), (n, 1)))
    pattern = rng.standard_normal((32, 16, 16)).astype(np.float32)
    audio = np.maximum(0, opening[:, None, None, None].astype(np.float32) * 3 * pattern
                       + 0.3 * rng.standard_normal((n, 32, 16, 16)).astype(np.float32))
    return image, audio.astype(np.float32)


def realistic_unet(image: np.ndarray, audio: np.ndarray, train_steps: int,
                   seed: int = 0, width: float = 1.0) -> UNet328:
    """Seeded full-width U-Net, optionally trained a few steps (L1 to the unmasked crop,
    reference = another frame), then BN statistics measured on the avatar."""
    torch.manual_seed(seed)
    model = UNet328("ave", width)
    rng = np.random.default_rng(seed)
    if train_steps:
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        model.train()
        for step in range(train_steps):
            i, j = rng.integers(0, len(image), 2)
            x = np.concatenate([image[j:j + 1, :3], image[i:i + 1, 3:]], axis=1)
            loss = (model(torch.from_numpy(x), torch.from_numpy(audio[i:i + 1]))
                    - torch.from_numpy(image[i:i + 1, :3])).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 10 == 0:
                print(f"  train step {step}: L1 {loss.item():.4f}", file=sys.stderr, flush=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for k in range(0, 16, 4):
            model(torch.from_numpy(image[k:k + 4]), torch.from_numpy(audio[k:k + 4]))
    return model.eval()


def time_round_robin(runners: dict[str, Callable[[], Any]], repeats: int
                     ) -> dict[str, list[float]]:
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times


def stage_profile(model: bytes, image: np.ndarray, audio: np.ndarray, threads: int,
                  runs: int = 3) -> dict[str, float]:
    """ms per call by top-level module (inc, down1, ..., up5, outc) from ORT's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp, "unet"))
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = {"image": image[:1], "audio": audio[:1]}
        session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    stages: dict[str, float] = collections.defaultdict(float)
    calls = 0
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            calls += 1
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"]
            stage = name.split("/")[1] if name.count("/") >= 2 else "layout/other"
            stages[stage] += e["dur"] / 1000
    return {k: v / max(calls, 1) for k, v in stages.items()}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {model}, {os.cpu_count()} cores"


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--widths", type=float, nargs="*", default=[0.75, 0.5],
                   help="narrower U-Nets to time too (ORT fp32, batch 1)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    started = time.perf_counter()
    load_before = load()
    image, audio = synthetic_avatar()
    if args.checkpoint:
        model = load_unet(args.checkpoint)
        calibration = avatar_calibration(args.checkpoint, model.audio_mode)
        source = f"checkpoint {args.checkpoint}"
    else:
        model = realistic_unet(image, audio, args.train_steps)
        calibration = None
        source = (f"seeded, {args.train_steps} training steps on the synthetic avatar, "
                  "BN statistics from it")
    if calibration is None:
        calibration = Calibration(image[0:32:2], audio[0:32:2], image[33::2], audio[33::2])
    fp32 = unet_onnx_bytes(model)
    ort32 = OrtUNetRunner(fp32, model.audio_shape, "fp32", args.threads)
    graphs: dict[str, bytes] = {"ORT fp32": fp32}
    runners: dict[str, Any] = {"ORT fp32": ort32}
    notes = []
    for recipe, scopes in INT8_RECIPES.items():
        t0 = time.perf_counter()
        name = f"ORT int8 {recipe}"
        graphs[name] = quantize_int8(fp32, calibration.fit_image, calibration.fit_audio, scopes)
        runners[name] = OrtUNetRunner(graphs[name], model.audio_shape, "int8", args.threads)
        q = int8_quality(ort32, runners[name], calibration.check_image, calibration.check_audio)
        verdict = "passes" if q["mean_abs_diff"] <= INT8_MAX_MEAN_ABS_DIFF else "fails"
        notes.append(f"- {name} (fp32 kept: {', '.join(scopes) or 'output conv only'}): "
                     f"quantised in {time.perf_counter() - t0:.0f} s; against fp32 on "
                     f"{len(calibration.check_image)} held-out frames: mean "
                     f"{q['mean_abs_diff']:.3f}, p99 {q['p99_abs_diff']:.2f}, max "
                     f"{q['max_abs_diff']:.1f} grey levels: {verdict} the "
                     f"{INT8_MAX_MEAN_ABS_DIFF:g} bound")
    eager = None if args.no_torch else TorchUNetRunner(model)

    print(f"# U-Net benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n")
    print(f"Command: `.venv/bin/python -m bench.bench_unet {' '.join(argv or sys.argv[1:])}`")
    print(f"Machine: {machine()}; torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} threads; load average before: {load_before}")
    print(f"Network: UNet328 ave width 1.0, {count_parameters(model):,} parameters; {source}")
    print(f"int8 calibrated on {len(calibration.fit_image)} frames:")
    print("\n".join(notes) + "\n")

    print("| batch | variant | median ms/call | frames/s | vs ORT fp32 |")
    print("|---:|---|---:|---:|---:|")
    for batch in args.batches:
        idx = np.arange(batch) % len(image)
        x, a = image[idx], audio[idx]
        calls: dict[str, Callable[[], Any]] = {
            name: (lambda r=r, x=x, a=a: r(x, a)) for name, r in runners.items()}
        if batch == 1:
            if eager is not None:  # batch 1 only: eager torch at batch 8 alone takes minutes
                calls["torch fp32"] = lambda r=eager, x=x, a=a: r(x, a)
            single = OrtUNetRunner(fp32, model.audio_shape, "fp32", 1)
            calls["ORT fp32, 1 thread"] = lambda r=single, x=x, a=a: r(x, a)
            for width in args.widths:
                narrow = realistic_unet(image, audio, 0, width=width)
                runner = OrtUNetRunner(unet_onnx_bytes(narrow), narrow.audio_shape, "fp32",
                                       args.threads)
                calls[f"ORT fp32, width {width:g} ({count_parameters(narrow) / 1e6:.1f} M "
                      f"params)"] = lambda r=runner, x=x, a=a: r(x, a)
        repeats = args.repeats if batch == 1 else max(3, args.repeats // 3)
        times = time_round_robin(calls, repeats)
        base = statistics.median(times["ORT fp32"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {batch} | {name} | {med * 1000:.1f} | {batch / med:.2f} | "
                  f"{base / med:.2f}x |", flush=True)

    if not args.no_profile:
        print("\nWhere the time goes (ONNX Runtime profiler, batch 1, ms per call):\n")
        profiles = {name: stage_profile(g, image, audio, args.threads)
                    for name, g in graphs.items()}
        totals = {name: sum(p.values()) for name, p in profiles.items()}
        print("| stage | " + " | ".join(f"{n} ms | share" for n in profiles) + " |")
        print("|---|" + "---:|---:|" * len(profiles))
        order = ["inc", "down1", "down2", "down3", "down4", "down5", "audio_model",
                 "fuse_conv", "up1", "up2", "up3", "up4", "up5", "outc"]
        seen = set().union(*profiles.values())
        for stage in order + sorted(seen - set(order)):
            cells = [f"{p.get(stage, 0.0):.1f} | {p.get(stage, 0.0) / totals[n]:.0%}"
                     for n, p in profiles.items()]
            if stage in seen:
                print(f"| {stage} | " + " | ".join(cells) + " |")
        print("| total | " + " | ".join(f"{t:.1f} | " for t in totals.values()) + " |")
    print(f"\nLoad average after: {load()}; bench took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
