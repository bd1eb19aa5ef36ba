"""Renderer throughput on 1080p source frames with a full-width U-Net (random weights).

    .venv/bin/python -m bench.bench_renderer [--frames 48] [--batches 1 8]
        [--backends onnxruntime int8 torch] [--audio-seconds 6] [--skip-infer]
        [--unet-width 1.0]

`--unet-width 0.25` times the U-Net width the bundled demo avatar uses (a CPU avatar).

For each U-Net backend (ONNX Runtime fp32; ONNX Runtime int8, calibrated on the avatar's
crops, kept only if it passes the runtime's quality check; eager torch) and batch size:
- the stage split of the frame pipeline run serially in one worker thread, as the service's
  batcher and `infer` run it (source frame fetch from
  the warm frame cache + copy, crop/mask, U-Net, feathered paste-back, JPEG encode at the
  service's default quality), in ms per frame;
- the whole Renderer service (with the runners it builds itself: `models.unet_precision`,
  fp32 by default, so not for the int8 row): one gRPC Render stream of `--frames` feature
  frames over 127.0.0.1, JPEG out, timed from the first request to the last frame received
  (the batcher, the encode threads and gRPC included), in frames/s and process CPU ms per
  frame; "CPU-bound frames/s" = cores x 1000 / that, what a dedicated machine with perfect
  scaling could reach (the dev VM's cores are shared, see bench/RESULTS.md).
Then `synctalk infer` on `--audio-seconds` of speech with the default (ONNX Runtime) backend:
its real-time factor (compute seconds / audio seconds; features, frames and MP4 encoding,
model loading excluded).

The avatar is built in a temporary folder in the prepared layout (avatar.json + 1080p JPEG
frames): the first pass over the frames pays for JPEG decoding, which is reported apart;
the timed runs see the warm frame cache, as a long-running service does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from kernels import select_backend
from synctalk.avatar import load_avatar
from synctalk.config import load_settings
from synctalk.models.int8 import Calibration
from synctalk.models.runner_factory import build_unet_runner
from synctalk.render.encode import DEFAULT_JPEG_QUALITY, encode_jpeg
from synctalk.render.pipeline import FrameCache, FrameJob, FramePipeline, RenderModel
from tests.support.avatars import make_1080p_avatar, speech_with_pauses

NAME = "hd"


def models_config(store: Path, backend: str, threads: int):
    return load_settings(models={"device": "cpu", "backend": backend, "threads": threads,
                                 "avatars_dir": str(store)}).models


def stage_split(model: RenderModel, batch: int, frames: int, rng: np.random.Generator
                ) -> dict[str, tuple[float, float]]:
    """(wall, process CPU) ms per frame of each stage, the pipeline run serially."""
    pipeline = FramePipeline(select_backend("cpu"))
    audio = rng.standard_normal((frames, 32, 16, 16)).astype(np.float32)
    jobs = [FrameJob(model, i % model.num_frames, audio[i]) for i in range(frames)]
    pipeline.render(jobs[:batch])  # warm-up (allocations, first ORT run at this batch)
    pipeline.times.reset()
    jpeg = [0.0, 0.0]
    started = pipeline.times.now()
    for lo in range(0, frames, batch):
        for image in pipeline.render(jobs[lo : lo + batch]):
            t = pipeline.times.now()
            encode_jpeg(image, DEFAULT_JPEG_QUALITY)
            end = pipeline.times.now()
            jpeg[0] += end[0] - t[0]
            jpeg[1] += end[1] - t[1]
    end = pipeline.times.now()
    split = {k: (1000 * pipeline.times.seconds[k] / frames,
                 1000 * pipeline.times.cpu_seconds[k] / frames) for k in pipeline.times.seconds}
    split["jpeg"] = (1000 * jpeg[0] / frames, 1000 * jpeg[1] / frames)
    split["total"] = (1000 * (end[0] - started[0]) / frames,
                      1000 * (end[1] - started[1]) / frames)
    return split


def service_fps(store: Path, backend: str, threads: int, batch: int, frames: int,
                rng: np.random.Generator) -> tuple[float, float]:
    """(frames/s, process CPU ms per frame) of one Render stream through a real server on
    127.0.0.1 (JPEG out; the client runs in the same process and is counted)."""
    from services.renderer.server import build_server, build_servicer
    from synctalk.rpc.channel import dial
    from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2, renderer_pb2_grpc

    cfg = load_settings(models={"device": "cpu", "backend": backend, "threads": threads,
                                "avatars_dir": str(store)},
                        renderer={"batch_size": batch}, server={"drain_grace_s": 1.0})
    windows = rng.standard_normal((frames, 32, 16, 16)).astype(np.float32)

    def request(i: int) -> renderer_pb2.RenderRequest:
        x = windows[i]
        return renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(
            index=i, pts_ms=40 * i, mode="ave", rms=0.1, voiced=True,
            features=common_pb2.Tensor(data=x.tobytes(), shape=list(x.shape),
                                       dtype=common_pb2.DTYPE_FLOAT32)))

    async def stream(n: int):
        yield renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=NAME))
        for i in range(n):
            yield request(i)

    async def main() -> tuple[float, float]:
        server = build_server(cfg, "127.0.0.1", 0, build_servicer(cfg))
        await server.start()
        try:
            async with dial(server.address) as channel:
                stub = renderer_pb2_grpc.RendererStub(channel)
                warm = [f async for f in stub.Render(stream(2 * batch), timeout=600)]
                assert len(warm) == 2 * batch
                started, cpu = time.perf_counter(), time.process_time()
                got = [f async for f in stub.Render(stream(frames), timeout=600)]
                elapsed = time.perf_counter() - started
                cpu_ms = 1000 * (time.process_time() - cpu) / frames
                assert [f.index for f in got] == list(range(frames))
                return frames / elapsed, cpu_ms
        finally:
            await server.drain_and_stop()

    return asyncio.run(main())


def calibration(avatar, rng: np.random.Generator) -> Calibration:
    """Int8 calibration inputs: the avatar's own crops, with feature windows drawn like the
    encoder's (the random-weight U-Net has no trained audio statistics to match)."""
    crops = select_backend("cpu").crop_mask([avatar.frames[i] for i in range(avatar.num_frames)],
                                            avatar.boxes)
    audio = rng.standard_normal((len(crops), 32, 16, 16)).astype(np.float32)
    return Calibration.split(crops, audio)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "int8", "torch"],
                        choices=["onnxruntime", "int8", "torch"])
    parser.add_argument("--torch-frames", type=int, default=16,
                        help="frames per torch run (eager torch is several times slower)")
    parser.add_argument("--threads", type=int, default=0, help="U-Net threads (0 = all cores)")
    parser.add_argument("--audio-seconds", type=float, default=6.0)
    parser.add_argument("--skip-infer", action="store_true")
    parser.add_argument("--unet-width", type=float, default=1.0,
                        help="U-Net channel width (1.0 = SyncTalk_2D's; the demo avatar: 0.25)")
    args = parser.parse_args(argv)

    print(f"# {platform.platform()}, {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f}, U-Net width {args.unet_width:g}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-renderer-") as tmp:
        store = Path(tmp)
        make_1080p_avatar(store, NAME, num_frames=16, unet_width=args.unet_width)
        avatar = load_avatar(store / NAME)
        cache = FrameCache()
        started = time.perf_counter()
        for i in range(avatar.num_frames):
            cache.get((NAME, i), lambda i=i: avatar.frames[i])
        decode_ms = 1000 * (time.perf_counter() - started) / avatar.num_frames
        print(f"1080p source JPEG decode (first pass, then cached): {decode_ms:.1f} ms/frame")

        cores = os.cpu_count() or 1
        print("\nms per frame, wall (process CPU); serial = one thread runs the stages in turn;"
              f" service = one gRPC stream; 'CPU-bound' = {cores} cores x 1000 / service CPU ms")
        print("\n| backend | batch | fetch | crop | U-Net | paste | JPEG | serial total "
              "| serial frames/s | service frames/s | service CPU ms/frame | CPU-bound frames/s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        # The service is timed with the runners it builds itself (models.unet_precision,
        # fp32 by default), so the int8 row has the serial split only.
        order = [b for b in ("onnxruntime", "torch", "int8") if b in args.backends]
        for name in order:
            backend = "torch" if name == "torch" else "onnxruntime"
            frames = args.torch_frames if name == "torch" else args.frames
            models = models_config(store, backend, args.threads)
            runner = build_unet_runner(
                avatar.unet_checkpoint("ave"), models,
                precision="int8" if name == "int8" else "fp32",
                calibration=calibration(avatar, rng) if name == "int8" else None)
            if name == "int8" and runner.precision != "int8":
                print("| int8 | - | the int8 graph failed the runtime's quality check: "
                      "fp32 is used | | | | | | | | | |")
                continue
            model = RenderModel(avatar, "ave", runner, np.asarray(avatar.boxes), cache,
                                key=(NAME, 0))
            for batch in args.batches:
                with ThreadPoolExecutor(1) as worker:  # where the service and infer render
                    s = worker.submit(stage_split, model, batch, frames, rng).result()
                cells = " | ".join(f"{s[k][0]:.1f} ({s[k][1]:.1f})"
                                   for k in ("frames", "crop", "unet", "paste", "jpeg", "total"))
                if name == "int8":  # the service's runners follow models.unet_precision
                    service = "- | - | -"
                else:
                    fps, cpu_ms = service_fps(store, backend, args.threads, batch, frames, rng)
                    service = f"{fps:.1f} | {cpu_ms:.0f} | {cores * 1000 / cpu_ms:.1f}"
                print(f"| {backend} {runner.precision} | {batch} | {cells} "
                      f"| {1000 / s['total'][0]:.1f} | {service} |", flush=True)

        if not args.skip_infer:
            from synctalk.commands.infer import infer

            wav = store / "speech.wav"
            sf.write(wav, speech_with_pauses(args.audio_seconds, 0.3, 0.3), 16000,
                     subtype="PCM_16")
            models = models_config(store, "onnxruntime", args.threads)
            runs = [infer(NAME, wav, models, store / "out.mp4", batch_size=8, progress=False)
                    for _ in range(2)]
            rtf = statistics.median(r.real_time_factor for r in runs)
            cpu_rtf = statistics.median(r.cpu_seconds / r.audio_seconds for r in runs)
            print(f"\ninfer, {args.audio_seconds:g} s of speech -> {runs[0].frames} frames of "
                  f"1920x1080 H.264 + AAC: real-time factor {rtf:.2f} "
                  f"({1 / rtf:.2f}x real time), runs {[round(r.real_time_factor, 2) for r in runs]}; "
                  f"CPU seconds per audio second {cpu_rtf:.2f} "
                  f"(CPU-bound on {cores} cores: real-time factor {cpu_rtf / cores:.2f})")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
