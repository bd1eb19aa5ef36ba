"""The Renderer gRPC server: avatars and their U-Nets load on first use (then stay cached);
the kernels backend and the idle window of the default feature mode are ready before the
port serves. On CUDA the resident pipeline is used, and the default avatar is warmed (frames
on the device, U-Net compiled) before serving."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from kernels import select_backend
from services.renderer import metrics
from services.renderer.avatars import AvatarStore
from services.renderer.servicer import RendererServicer
from synctalk.config import Settings
from synctalk.features.device import resolve_device
from synctalk.log import get_logger
from synctalk.metrics_http import serving_metrics
from synctalk.render.device_frames import DeviceFrames
from synctalk.render.idle import silence_window
from synctalk.render.pipeline import FrameCache, FrameJob, FramePipeline
from synctalk.render.resident import ResidentPipeline
from synctalk.rpc.errors import RpcError
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2, renderer_pb2_grpc
from synctalk.rpc.server import GrpcServer, service_server

SERVICE_NAME = renderer_pb2.DESCRIPTOR.services_by_name["Renderer"].full_name

log = get_logger("services.renderer")


def resident_device(settings: Settings) -> str | None:
    """Where the resident pipeline runs ("cuda", "cpu"), or None for the host path.

    `renderer.resident`: "auto" = on CUDA only, when torch and the CUDA kernels both work;
    "on" = also on the CPU device; "off" = never."""
    mode = settings.renderer.resident
    if mode == "off":
        return None
    try:
        device = resolve_device(settings.models)
    except RuntimeError:
        device = "cpu"
    if device == "cuda":
        if select_backend("auto").NAME == "cuda":
            return "cuda"
        log.warning("render.resident_off", reason="torch sees CUDA but the CUDA kernels do not "
                                                  "work (see kernels.backend)")
    return "cpu" if mode == "on" else None


def build_servicer(settings: Settings) -> RendererServicer:
    config, models = settings.renderer, settings.models
    workers = models.threads or os.cpu_count() or 2
    if models.warmup:
        try:
            silence_window(models.feature_mode, models)
        except Exception:  # idle frames then keep their own features (logged per stream)
            log.exception("render.no_silence_window", mode=models.feature_mode)
    device = resident_device(settings)
    device_frames = None
    pipeline: FramePipeline | ResidentPipeline
    if device is not None:
        device_frames = DeviceFrames(device, config.device_frames_mb * 1024**2,
                                     on_change=metrics.RESIDENT_AVATAR_BYTES.set)
        pipeline = ResidentPipeline(device_frames, encode_threads=workers)
    else:
        pipeline = FramePipeline(select_backend("cpu" if models.device == "cpu" else "auto"))
    servicer = RendererServicer(
        AvatarStore(Path(models.avatars_dir), models,
                    FrameCache(config.frame_cache_mb * 1024**2), config.model_cache,
                    device_frames=device_frames),
        pipeline,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-encode"),
        config,
        default_mode=models.feature_mode,
    )
    log.info("render.pipeline", resident=device is not None, device=device or "host",
             batch_size=servicer.batcher.max_batch,
             batch_wait_ms=servicer.batcher.max_wait_s * 1000)
    if device == "cuda" and models.warmup:
        warm_gpu(servicer, settings)
    return servicer


def compile_sizes(batch_size: int) -> list[int]:
    """The batch sizes the U-Net is compiled for: powers of two up to the batch size, and it."""
    sizes = [1 << k for k in range(batch_size.bit_length()) if 1 << k <= batch_size]
    return sorted({*sizes, batch_size})


def warm_gpu(servicer: RendererServicer, settings: Settings) -> None:
    """Before serving: the default avatar's frames on the device, its U-Net compiled for the
    batcher's sizes within `models.unet_compile_budget_s` (eager on failure, logged), and one
    full batch through the pipeline (cuDNN autotuning, nvjpeg, the kernels' first launch)."""
    models, svc = settings.models, settings.services
    started = time.perf_counter()
    try:
        model = servicer.store.model(svc.default_avatar, models.feature_mode)
    except RpcError as err:
        log.info("render.warmup_skipped", avatar=svc.default_avatar, reason=err.message)
        return
    try:
        if models.unet_compile and hasattr(model.runner, "compile_for"):
            model.runner.compile_for(compile_sizes(servicer.batcher.max_batch),
                                     models.unet_compile_budget_s)
        audio = np.zeros(model.runner.audio_shape, np.float32)
        jobs = [FrameJob(model, i % model.num_frames, audio)
                for i in range(servicer.batcher.max_batch)]
        servicer.pipeline.render_encoded(jobs)  # type: ignore[union-attr]
    except Exception:  # serving still works; the first batches pay for what was not warmed
        log.exception("render.warmup_failed", avatar=svc.default_avatar)
    log.info("render.warmup", avatar=svc.default_avatar,
             seconds=round(time.perf_counter() - started, 1))


def build_server(settings: Settings, host: str, port: int,
                 servicer: RendererServicer | None = None) -> GrpcServer:
    servicer = servicer or build_servicer(settings)

    def register(server: grpc.aio.Server) -> None:
        renderer_pb2_grpc.add_RendererServicer_to_server(servicer, server)

    server = service_server(settings.server, SERVICE_NAME, register, host, port)

    async def set_health(serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if not server.tracker.draining:  # a draining server stays NOT_SERVING
            for name in ("", SERVICE_NAME):
                await server.health.set(name, status)

    servicer.attach_health(set_health, f"{socket.gethostname()}:{server.port}")
    return server


async def serve(settings: Settings, host: str, port: int) -> None:
    servicer = build_servicer(settings)
    server = build_server(settings, host, port, servicer)
    try:
        with serving_metrics(settings.services, "renderer", host):
            await server.run_until_signal()
    finally:
        await servicer.close()
