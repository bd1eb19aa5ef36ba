"""Per-frame cost of the crop/mask and paste-back kernels on 1080p frames.

    .venv/bin/python -m bench.bench_kernels [--batches 1 16 64] [--repeats 5] [--backend auto]

Frames are 1920x1080 BGR with one 400-600 px box each (a few cross the frame border). Prints
the median time per frame for each batch size, the CPU path against the float reference, and
its share of a 25 fps frame. On a GPU it also measures device copy bandwidth and reports the
bandwidth floor (bytes each kernel must move / bandwidth) and how far above it each kernel is.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from kernels import reference, select_backend
from kernels.reference import WINDOW

HEIGHT, WIDTH = 1080, 1920
FRAME_MS = 40.0


def make_batch(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """n distinct 1080p frames (paste writes in place, so frames must not share memory)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(
        rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8),
        (WIDTH, HEIGHT),
        interpolation=cv2.INTER_LINEAR,
    )
    frames, boxes = [], []
    for i in range(n):
        frames.append(np.roll(base, i * 7, axis=1))
        side = int(rng.integers(400, 601))
        x0 = (
            int(rng.integers(-40, WIDTH - side + 40))
            if i % 8 == 7
            else int(rng.integers(0, WIDTH - side))
        )
        y0 = int(rng.integers(0, HEIGHT - side))
        boxes.append((x0, y0, x0 + side, y0 + side))
    return frames, np.array(boxes, dtype=np.int32)


def median_s(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_bytes(boxes: np.ndarray, out_itemsize: int) -> tuple[int, int]:
    """Bytes the crop and the paste kernels must touch at least (reads + writes): a bilinear
    resize to 328 px reads every box pixel up to a 656 px side."""
    areas = [int((b[2] - b[0]) * (b[3] - b[1])) for b in boxes]
    crop = (
        sum(min(a, 656 * 656) * 3 for a in areas) + len(areas) * 6 * WINDOW * WINDOW * out_itemsize
    )
    paste = sum(a * 3 * 2 for a in areas) + len(areas) * 3 * WINDOW * WINDOW * out_itemsize
    return crop, paste


def device_bandwidth() -> float:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    import cupy

    src = cupy.empty(1 << 30, dtype=cupy.uint8)
    dst = cupy.empty_like(src)
    sync = cupy.cuda.get_current_stream().synchronize
    t = median_s(lambda: dst.__setitem__(slice(None), src), 5, sync)
    return 2 * src.nbytes / t


def run_backend(backend: ModuleType, batches: list[int], repeats: int) -> list[dict[str, Any]]:
    gpu = backend.NAME == "cuda"
    rows = []
    if gpu:
        import cupy

        sync = cupy.cuda.get_current_stream().synchronize
        bandwidth = device_bandwidth()
        print(f"device copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    else:
        sync = lambda: None  # noqa: E731
        bandwidth = 0.0
    for n in batches:
        frames, boxes = make_batch(n)
        pred = np.random.default_rng(1).random((n, 3, WINDOW, WINDOW), dtype=np.float32)
        if gpu:
            import cupy

            frames = [cupy.asarray(f) for f in frames]
            pred = cupy.asarray(pred)
            out = cupy.empty((n, 6, WINDOW, WINDOW), dtype=cupy.float32)
        else:
            out = np.empty((n, 6, WINDOW, WINDOW), dtype=np.float32)
        crop_s = median_s(
            lambda f=frames, b=boxes, o=out: backend.crop_mask(f, b, out=o), repeats, sync
        )
        paste_s = median_s(
            lambda f=frames, b=boxes, p=pred: backend.paste_back(f, b, p), repeats, sync
        )
        row = {"batch": n, "crop_ms": 1e3 * crop_s / n, "paste_ms": 1e3 * paste_s / n}
        line = (
            f"{backend.NAME:4s} batch {n:3d}: crop_mask {row['crop_ms']:.3f} ms/frame, "
            f"paste_back {row['paste_ms']:.3f} ms/frame, together "
            f"{100 * (row['crop_ms'] + row['paste_ms']) / FRAME_MS:.1f}% of a 25 fps frame"
        )
        if gpu:
            crop_b, paste_b = kernel_bytes(boxes, 4)
            row["crop_floor_x"] = crop_s / (crop_b / bandwidth)
            row["paste_floor_x"] = paste_s / (paste_b / bandwidth)
            line += (
                f"; {row['crop_floor_x']:.2f}x / {row['paste_floor_x']:.2f}x the bandwidth floor"
            )
        print(line, flush=True)
        rows.append(row)
    return rows


def reference_ratio(repeats: int) -> None:
    """How much faster the CPU path is than the float reference, batch 1."""
    from kernels import cpu

    frames, boxes = make_batch(1)
    pred = np.random.default_rng(1).random((1, 3, WINDOW, WINDOW), dtype=np.float32)
    none = lambda: None  # noqa: E731
    for name, fn_ref, fn_cpu in [
        (
            "crop_mask",
            lambda: reference.crop_mask(frames, boxes),
            lambda: cpu.crop_mask(frames, boxes),
        ),
        (
            "paste_back",
            lambda: reference.paste_back(frames, boxes, pred),
            lambda: cpu.paste_back(frames, boxes, pred),
        ),
    ]:
        r = median_s(fn_ref, max(1, repeats // 2), none)
        c = median_s(fn_cpu, repeats, none)
        print(
            f"reference {name} {1e3 * r:.2f} ms vs cpu {1e3 * c:.3f} ms: cpu path {r / c:.1f}x faster"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    args = ap.parse_args(argv)
    print(f"command: {' '.join([sys.executable, '-m', 'bench.bench_kernels', *sys.argv[1:]])}")
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads"
    )
    print(
        f"frames {WIDTH}x{HEIGHT}, boxes 400-600 px, fp32 U-Net tensors; medians of {args.repeats} runs"
    )
    backend = select_backend(args.backend)
    run_backend(backend, args.batches, args.repeats)
    if backend.NAME == "cpu":
        reference_ratio(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
