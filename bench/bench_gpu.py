"""The renderer on one GPU, end to end, in one command (under 5 minutes on an H100/H200).

    python -m bench.bench_gpu [--quick] [--batches 1 16 64 128] [--streams 32]
        [--no-compile] [--compile-budget 60] [--json out.json]

For a 1080p avatar with a full-width U-Net (random weights) and the bundled demo avatar:
  (a) host-copy path: `FramePipeline` (kernels on the device, frames and crops through host
      arrays) + cv2 JPEG per frame, frames/s per batch size;
  (b) resident path: `ResidentPipeline` (frames on the device, fp16 U-Net, nvjpeg; the 1080p
      avatar's U-Net compiled for these batch sizes unless --no-compile, within
      --compile-budget seconds), frames/s per batch size;
  (c) the Render gRPC service on 127.0.0.1 with `--streams` concurrent streams, each sending
      its features as fast as backpressure allows: total frames/s, late frames (a frame is
      late when it arrives more than one frame period after its play-out time, counted from
      the stream's first frame at 25 fps) and p95 time to first frame;
  (d) a SyncTalk_2D-style loop: batch 1, OpenCV crop/resize (INTER_CUBIC) on the host, fp32
      U-Net, hard paste back with OpenCV, cv2 JPEG (frames already decoded in memory);
and the ratios (b)/(a) and (b)/(d). Without a GPU the same code runs on the CPU device with
small frames and a short duration (`--quick` is what CI runs). Runs from a checkout with
PYTHONPATH pointing at the dependencies; it imports no optional service (no ONNX, no TTS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from kernels import RING, WINDOW, select_backend
from synctalk.avatar import load_avatar
from synctalk.avatar.layout import META_FILE
from synctalk.config import REPO_ROOT, load_settings
from synctalk.models.runners import TorchUNetRunner
from synctalk.models.unet import load_unet
from synctalk.render.device_frames import DeviceFrames
from synctalk.render.encode import DEFAULT_JPEG_QUALITY, encode_jpeg
from synctalk.render.pipeline import FrameCache, FrameJob, FramePipeline, RenderModel
from synctalk.render.resident import ResidentPipeline
from tests.support.avatars import make_avatar

FRAME_S = 0.04
DEMO = REPO_ROOT / "assets" / "avatars" / "demo"


@dataclass
class Profile:
    device: str
    height: int
    width: int
    unet_width: float
    frames: int  # source frames of the synthetic avatar
    batches: list[int]
    seconds: float  # per measurement
    streams: int
    stream_frames: int


def profile(args: argparse.Namespace) -> Profile:
    gpu = torch.cuda.is_available() and not args.cpu
    if gpu:
        return Profile("cuda", 1080, 1920, 1.0, 32, args.batches or [1, 16, 64, 128],
                       args.seconds or 2.0, args.streams or 32, args.stream_frames or 250)
    quick = args.quick
    return Profile("cpu", 180 if quick else 540, 320 if quick else 960, 0.125 if quick else 0.25,
                   6 if quick else 16, args.batches or ([1, 2] if quick else [1, 8, 16]),
                   args.seconds or (0.05 if quick else 2.0), args.streams or (2 if quick else 4),
                   args.stream_frames or (4 if quick else 50))


def timed(render: Callable[[list[FrameJob]], Any], jobs: list[FrameJob], batch: int,
          seconds: float) -> float:
    """Frames/s of `render` over consecutive batches for at least `seconds` (one warm batch)."""
    render(jobs[:batch])
    done, lo, started = 0, 0, time.perf_counter()
    while True:
        chunk = [jobs[(lo + k) % len(jobs)] for k in range(batch)]
        render(chunk)
        done += batch
        lo += batch
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def host_path(pipeline: FramePipeline) -> Callable[[list[FrameJob]], list[bytes]]:
    def run(jobs: list[FrameJob]) -> list[bytes]:
        return [encode_jpeg(image, DEFAULT_JPEG_QUALITY) for image in pipeline.render(jobs)]

    return run


def baseline_loop(model: RenderModel, runner: TorchUNetRunner) -> Callable[[list[FrameJob]], Any]:
    """SyncTalk_2D's inference_328 loop per frame (batch 1, host OpenCV, hard paste)."""
    mask = np.ones((WINDOW, WINDOW, 3), np.float32)
    mask[5:310, 5:315] = 0  # the masked rectangle of the U-Net's second input

    def one(job: FrameJob) -> bytes:
        frame = model.frame(job.source).copy()
        x0, y0, x1, y1 = (int(v) for v in model.boxes[job.source])
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
        crop = cv2.resize(frame[y0:y1, x0:x1], (328, 328), interpolation=cv2.INTER_CUBIC)
        window = crop[RING:RING + WINDOW, RING:RING + WINDOW].astype(np.float32) / 255.0
        image = np.concatenate([window, window * mask], axis=2).transpose(2, 0, 1)[None]
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(image)).to(runner.device)
            a = torch.from_numpy(job.audio[None]).to(runner.device)
            pred = runner.model(x, a)[0].cpu().numpy().transpose(1, 2, 0) * 255
        crop[RING:RING + WINDOW, RING:RING + WINDOW] = pred.astype(np.uint8)
        frame[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0),
                                         interpolation=cv2.INTER_CUBIC)
        return encode_jpeg(frame, DEFAULT_JPEG_QUALITY)

    return lambda jobs: [one(job) for job in jobs]


def bench_avatar(name: str, store: Path, prof: Profile, args: argparse.Namespace,
                 rng: np.random.Generator) -> dict[str, Any]:
    avatar = load_avatar(store / name)
    checkpoint = avatar.unet_checkpoint("ave")
    gpu = prof.device == "cuda"
    fast = TorchUNetRunner(load_unet(checkpoint), prof.device, fp16=gpu)
    fp32 = TorchUNetRunner(load_unet(checkpoint), prof.device)
    model = RenderModel(avatar, "ave", fast, np.asarray(avatar.boxes), FrameCache(), key=(name, 0))
    slow = RenderModel(avatar, "ave", fp32, model.boxes, model.cache, key=(name, 0))
    audio = rng.standard_normal((64, *fast.audio_shape)).astype(np.float32)
    jobs = [FrameJob(model, i % avatar.num_frames, audio[i % 64]) for i in range(256)]
    compiled: tuple[int, ...] = ()
    if gpu and not args.no_compile and name == "hd":  # the headline figure; demo runs eager
        compiled = fast.compile_for(prof.batches, args.compile_budget)
    kernels = select_backend("cuda" if gpu else "cpu")
    host = host_path(FramePipeline(kernels))
    resident = ResidentPipeline(DeviceFrames(prof.device, 8 * 2**30), kernels)
    rows = []
    try:
        for batch in prof.batches:
            a = timed(host, jobs, batch, prof.seconds)
            b = timed(resident.render_encoded, jobs, batch, prof.seconds)
            rows.append({"batch": batch, "host_copy_fps": a, "resident_fps": b})
            print(f"| {name} | {avatar.width}x{avatar.height} | {batch} | {a:.1f} | {b:.1f} "
                  f"| {b / a:.1f}x |", flush=True)
    finally:
        resident.close()
    base_jobs = [FrameJob(slow, j.source, j.audio) for j in jobs]
    baseline = timed(baseline_loop(slow, fp32), base_jobs, 1, prof.seconds)
    return {"avatar": name, "size": [avatar.width, avatar.height], "rows": rows,
            "baseline_fps": baseline, "compiled_sizes": list(compiled),
            "precision": fast.precision}


# ---------------------------------------------------------------- (c) the service


async def one_stream(stub: Any, avatar: str, frames: int, windows: np.ndarray
                     ) -> dict[str, Any]:
    from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2

    async def requests():
        yield renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=avatar))
        for i in range(frames):
            w = windows[i % len(windows)]
            yield renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(
                index=i, pts_ms=40 * i, mode="ave", rms=0.1, voiced=True,
                features=common_pb2.Tensor(data=w.tobytes(), shape=list(w.shape),
                                           dtype=common_pb2.DTYPE_FLOAT32)))

    started = time.perf_counter()
    arrivals = [time.perf_counter() async for _ in stub.Render(requests(), timeout=600)]
    first = arrivals[0]
    late = sum(t > first + (i + 1) * FRAME_S for i, t in enumerate(arrivals))
    return {"ttff": first - started, "frames": len(arrivals), "late": late}


def bench_service(store: Path, avatar: str, prof: Profile, args: argparse.Namespace,
                  rng: np.random.Generator) -> dict[str, Any]:
    from services.renderer.server import build_server, build_servicer
    from synctalk.rpc.channel import dial
    from synctalk.rpc.gen.lipsync.v1 import renderer_pb2_grpc

    gpu = prof.device == "cuda"
    cfg = load_settings(
        models={"device": prof.device, "backend": "torch", "avatars_dir": str(store),
                "unet_compile": gpu and not args.no_compile and avatar == "hd",
                "unet_compile_budget_s": args.compile_budget, "warmup": gpu},
        services={"default_avatar": avatar},
        renderer={"resident": "on", "batch_deadline_s": 0.0},
        server={"drain_grace_s": 1.0, "max_concurrent_streams": max(64, 2 * prof.streams)})
    windows = rng.standard_normal((32, 32, 16, 16)).astype(np.float32)

    async def main() -> dict[str, Any]:
        servicer = await asyncio.to_thread(build_servicer, cfg)
        server = build_server(cfg, "127.0.0.1", 0, servicer)
        await server.start()
        try:
            async with dial(server.address) as channel:
                stub = renderer_pb2_grpc.RendererStub(channel)
                await one_stream(stub, avatar, 2, windows)  # model load + first upload
                started = time.perf_counter()
                results = await asyncio.gather(*[
                    one_stream(stub, avatar, prof.stream_frames, windows)
                    for _ in range(prof.streams)])
                elapsed = time.perf_counter() - started
        finally:
            await server.drain_and_stop()
            await servicer.close()
        frames = sum(r["frames"] for r in results)
        ttff = sorted(r["ttff"] for r in results)
        p95 = ttff[min(len(ttff) - 1, int(round(0.95 * (len(ttff) - 1))))]
        return {"avatar": avatar, "streams": prof.streams, "total_fps": frames / elapsed,
                "frames": frames, "late_frames": sum(r["late"] for r in results),
                "late_share": sum(r["late"] for r in results) / max(frames, 1),
                "p95_ttff_ms": 1000 * p95, "median_ttff_ms": 1000 * statistics.median(ttff),
                "batches": servicer.batcher.batches_run,
                "mean_batch": servicer.batcher.items_run / max(servicer.batcher.batches_run, 1)}

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI, no GPU)")
    parser.add_argument("--cpu", action="store_true", help="the CPU device even with a GPU")
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--seconds", type=float, help="per measurement")
    parser.add_argument("--streams", type=int)
    parser.add_argument("--stream-frames", type=int)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-budget", type=float, default=45.0,
                        help="seconds of torch.compile per runner (1080p avatar only)")
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with "
                                                    "--quick, else torch's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    prof = profile(args)
    rng = np.random.default_rng(0)
    gpu = prof.device == "cuda"
    threads = args.threads if args.threads is not None else (1 if args.quick else 0)
    if not gpu and threads > 0:  # spinning OpenMP threads crawl on a shared 2-core machine
        torch.set_num_threads(threads)
    where = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"# bench_gpu on {where}, torch {torch.__version__}, python {sys.version.split()[0]}; "
          f"synthetic avatar {prof.width}x{prof.height}, U-Net width {prof.unet_width:g}")
    started = time.perf_counter()
    report: dict[str, Any] = {"device": where, "profile": prof.__dict__, "avatars": [],
                              "service": []}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        store = Path(tmp)
        make_avatar(store, "hd", num_frames=prof.frames, height=prof.height, width=prof.width,
                    unet_width=prof.unet_width, jpeg=True)
        names = ["hd"]
        if not args.no_demo and (DEMO / META_FILE).is_file() and not args.quick:
            shutil.copytree(DEMO, store / "demo", ignore=shutil.ignore_patterns("*.onnx"))
            names.append("demo")
        print("\n| avatar | size | batch | (a) host-copy frames/s | (b) resident frames/s "
              "| (b)/(a) |\n|---|---|---:|---:|---:|---:|")
        for name in names:
            report["avatars"].append(bench_avatar(name, store, prof, args, rng))
        print("\n| avatar | (d) SyncTalk_2D-style frames/s | best (b) frames/s | (b)/(d) "
              "| U-Net | compiled sizes |\n|---|---:|---:|---:|---|---|")
        for r in report["avatars"]:
            best = max(row["resident_fps"] for row in r["rows"])
            print(f"| {r['avatar']} | {r['baseline_fps']:.1f} | {best:.1f} "
                  f"| {best / r['baseline_fps']:.1f}x | {r['precision']} "
                  f"| {r['compiled_sizes'] or 'eager'} |")
        print(f"\n| avatar | (c) service, {prof.streams} streams x {prof.stream_frames} frames "
              "| total frames/s | late frames | p95 time to first frame ms | mean batch |"
              "\n|---|---|---:|---:|---:|---:|")
        for name in names:
            s = bench_service(store, name, prof, args, rng)
            report["service"].append(s)
            print(f"| {name} | {s['frames']} frames | {s['total_fps']:.1f} "
                  f"| {s['late_frames']} ({100 * s['late_share']:.2f} %) "
                  f"| {s['p95_ttff_ms']:.0f} | {s['mean_batch']:.1f} |", flush=True)
    report["seconds"] = time.perf_counter() - started
    print(f"\n# {report['seconds']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
