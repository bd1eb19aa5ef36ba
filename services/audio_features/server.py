"""The AudioFeatures gRPC server: every feature mode loads (and warms up) once at start."""

from __future__ import annotations

from functools import partial

from services.audio_features.servicer import AudioFeaturesServicer
from synctalk.config import Settings
from synctalk.features import MODES, get_extractor
from synctalk.features.base import FeatureExtractor
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import audio_features_pb2, audio_features_pb2_grpc
from synctalk.rpc.server import GrpcServer, service_server
from synctalk.rpc.service import serve_with_metrics, worker_pool

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
    servicer = AudioFeaturesServicer(
        load_extractors(settings),
        settings.models.feature_mode,
        worker_pool(settings.models, "features"),
        settings.services.max_stream_seconds,
    )
    register = partial(audio_features_pb2_grpc.add_AudioFeaturesServicer_to_server, servicer)
    return service_server(settings.server, SERVICE_NAME, register, host, port)


async def serve(settings: Settings, host: str, port: int) -> None:
    await serve_with_metrics(build_server(settings, host, port), settings.services,
                             "audio_features", host)
