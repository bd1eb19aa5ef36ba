"""The Renderer gRPC server: avatars and their U-Nets load on first use (then stay cached);
the kernels backend and the idle window of the default feature mode are ready before the
port serves."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from kernels import select_backend
from services.renderer.avatars import AvatarStore
from services.renderer.servicer import RendererServicer
from synctalk.config import Settings
from synctalk.log import get_logger
from synctalk.render.idle import silence_window
from synctalk.render.pipeline import FrameCache, FramePipeline
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2, renderer_pb2_grpc
from synctalk.rpc.server import GrpcServer, service_server

SERVICE_NAME = renderer_pb2.DESCRIPTOR.services_by_name["Renderer"].full_name

log = get_logger("services.renderer")


def build_servicer(settings: Settings) -> RendererServicer:
    svc = settings.services
    models = settings.models
    workers = models.threads or os.cpu_count() or 2
    if models.warmup:
        try:
            silence_window(models.feature_mode, models)
        except Exception:  # idle frames then keep their own features (logged per stream)
            log.exception("render.no_silence_window", mode=models.feature_mode)
    prefer = "cpu" if models.device == "cpu" else "auto"
    return RendererServicer(
        AvatarStore(Path(models.avatars_dir), models,
                    FrameCache(svc.render_frame_cache_mb * 1024**2), svc.render_model_cache),
        FramePipeline(select_backend(prefer)),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-encode"),
        batch_size=svc.render_batch_size,
        batch_wait_ms=svc.render_batch_wait_ms,
        max_frames=svc.max_render_frames,
        jpeg_quality=svc.jpeg_quality,
        default_mode=models.feature_mode,
        inflight_per_batch=svc.render_inflight_per_batch,
    )


def build_server(settings: Settings, host: str, port: int,
                 servicer: RendererServicer | None = None) -> GrpcServer:
    svc = settings.services
    servicer = servicer or build_servicer(settings)

    def register(server: grpc.aio.Server) -> None:
        renderer_pb2_grpc.add_RendererServicer_to_server(servicer, server)

    return service_server(svc, SERVICE_NAME, register, host, port)


async def serve(settings: Settings, host: str, port: int) -> None:
    servicer = build_servicer(settings)
    server = build_server(settings, host, port, servicer)
    try:
        await server.run_until_signal()
    finally:
        await servicer.close()
