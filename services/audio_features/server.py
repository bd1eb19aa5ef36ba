"""The AudioFeatures gRPC server: every feature mode loads (and warms up) once at start."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import grpc

from services.audio_features.servicer import AudioFeaturesServicer
from synctalk.config import Settings
from synctalk.features import MODES, get_extractor
from synctalk.features.base import FeatureExtractor
from synctalk.log import get_logger
from synctalk.metrics_http import serving_metrics
from synctalk.rpc.gen.lipsync.v1 import audio_features_pb2, audio_features_pb2_grpc
from synctalk.rpc.server import GrpcServer, service_server

SERVICE_NAME = audio_features_pb2.DESCRIPTOR.services_by_name["AudioFeatures"].full_name

log = get_logger("services.audio_features")


def load_extractors(settings: Settings) -> dict[str, FeatureExtractor]:
    """Every mode that loads; the default mode must, the others may fail (logged)."""
    extractors: dict[str, FeatureExtractor] = {}
    for name in MODES:
        try:
            extractor = get_extractor(name, settings.models)
            if settings.models.warmup:
                extractor.warmup()
        except Exception:
            if name == settings.models.feature_mode:
                raise
            log.exception("features.mode_unavailable", mode=name)
            continue
        extractors[name] = extractor
    return extractors


def build_server(settings: Settings, host: str, port: int) -> GrpcServer:
    workers = settings.models.threads or os.cpu_count() or 2
    servicer = AudioFeaturesServicer(
        load_extractors(settings),
        settings.models.feature_mode,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="features"),
        settings.services.max_stream_seconds,
    )

    def register(server: grpc.aio.Server) -> None:
        audio_features_pb2_grpc.add_AudioFeaturesServicer_to_server(servicer, server)

    return service_server(settings.server, SERVICE_NAME, register, host, port)


async def serve(settings: Settings, host: str, port: int) -> None:
    server = build_server(settings, host, port)
    with serving_metrics(settings.services, "audio_features", host):
        await server.run_until_signal()
