"""The TextToSpeech gRPC server: voices load and warm up once, before the port serves."""

from __future__ import annotations

from functools import partial

from services.tts.servicer import TextToSpeechServicer
from services.tts.voices import load_voices
from synctalk.config import Settings
from synctalk.rpc.gen.lipsync.v1 import tts_pb2, tts_pb2_grpc
from synctalk.rpc.server import GrpcServer, service_server
from synctalk.rpc.service import serve_with_metrics, worker_pool

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name


def build_server(settings: Settings, host: str, port: int) -> GrpcServer:
    servicer = TextToSpeechServicer(
        load_voices(settings.tts, warmup=settings.models.warmup),
        settings.tts,
        worker_pool(settings.models, "tts"),
    )
    register = partial(tts_pb2_grpc.add_TextToSpeechServicer_to_server, servicer)
    return service_server(settings.server, SERVICE_NAME, register, host, port)


async def serve(settings: Settings, host: str, port: int) -> None:
    await serve_with_metrics(build_server(settings, host, port), settings.services, "tts", host)
