"""The TextToSpeech gRPC server: voices load and warm up once, before the port serves."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import grpc

from services.tts.servicer import TextToSpeechServicer
from services.tts.voices import load_voices
from synctalk.config import Settings
from synctalk.metrics_http import serving_metrics
from synctalk.rpc.gen.lipsync.v1 import tts_pb2, tts_pb2_grpc
from synctalk.rpc.server import GrpcServer, service_server

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name


def build_server(settings: Settings, host: str, port: int) -> GrpcServer:
    workers = settings.models.threads or os.cpu_count() or 2
    servicer = TextToSpeechServicer(
        load_voices(settings.tts, warmup=settings.models.warmup),
        settings.tts,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts"),
    )

    def register(server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_TextToSpeechServicer_to_server(servicer, server)

    return service_server(settings.server, SERVICE_NAME, register, host, port)


async def serve(settings: Settings, host: str, port: int) -> None:
    server = build_server(settings, host, port)
    with serving_metrics(settings.services, "tts", host):
        await server.run_until_signal()
