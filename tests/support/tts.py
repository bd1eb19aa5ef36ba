"""A TTS gRPC server in a background thread and its request builders."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from services.tts.server import build_server
from synctalk.config import Settings
from synctalk.rpc.gen.lipsync.v1 import tts_pb2
from synctalk.rpc.server import GrpcServer


@contextmanager
def running_server(settings: Settings) -> Iterator[GrpcServer]:
    """A TTS server on its own event loop in a background thread, stopped on exit."""
    async def start() -> GrpcServer:
        server = build_server(settings, "127.0.0.1", 0)
        await server.start()
        return server

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.server.stop(0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def config(**fields: object) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig(**fields))


def text(piece: str | bytes) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(text=piece.encode("utf-8") if isinstance(piece, str) else piece)
