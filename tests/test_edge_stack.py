"""A real stack on 127.0.0.1 for the edge tests (tts, audio_features, renderer replicas and
edges on one background event loop), and the tests of the stack as a whole: health of every
service, and two renderer replicas behind one target both getting sessions."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from services.edge.server import EdgeServer
from synctalk.audio.pcm import float_to_s16le, s16le_to_float
from synctalk.config import Settings, load_settings
from synctalk.rpc.server import GrpcServer
from tests.avatar_fixtures import make_avatar

T = TypeVar("T")
AVATAR = "demo"
AVATAR_SIZE = (160, 128)  # width, height: small and not square


class BackgroundLoop:
    """An event loop in a thread: servers run there, the test drives them with `run`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_rest(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Edge:
    server: EdgeServer
    url: str
    grpc_address: str

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


class Stack:
    """Backends started once; edges (each with its own settings) started on demand."""

    def __init__(self, root: Path, renderers: int = 1) -> None:
        self.root = root
        self.store = root / "avatars"
        if not (self.store / AVATAR).exists():
            make_avatar(self.store, AVATAR, num_frames=10, width=AVATAR_SIZE[0],
                        height=AVATAR_SIZE[1])
        self.loop = BackgroundLoop()
        self.settings = load_settings(models={"device": "cpu", "avatars_dir": str(self.store)})
        self.edges: list[EdgeServer] = []
        self.tts, self.features, self.renderers = self.loop.run(self._start(renderers))

    async def _start(self, renderers: int) -> tuple[GrpcServer, GrpcServer, list[GrpcServer]]:
        from services.audio_features.server import build_server as features_server
        from services.renderer.server import build_server as renderer_server
        from services.renderer.server import build_servicer
        from services.tts.server import build_server as tts_server

        started = []
        for build in (tts_server, features_server):
            server = build(self.settings, "127.0.0.1", 0)
            await server.start()
            started.append(server)
        replicas = []
        self.renderer_servicers = []
        for _ in range(renderers):
            servicer = build_servicer(self.settings)
            server = renderer_server(self.settings, "127.0.0.1", 0, servicer=servicer)
            await server.start()
            replicas.append(server)
            self.renderer_servicers.append(servicer)
        return started[0], started[1], replicas

    def edge_settings(self, **services: Any) -> Settings:
        targets = {
            "tts_target": self.tts.address,
            "audio_features_target": self.features.address,
            "renderer_target": "ipv4:" + ",".join(r.address for r in self.renderers),
        }
        debug = services.pop("debug", {})
        return load_settings(
            models={"device": "cpu", "avatars_dir": str(self.store)},
            services={**targets, **services},
            debug={"frames_dir": str(self.root / "debug" / "frames"),
                   "audio_dir": str(self.root / "debug" / "audio"), **debug},
        )

    def edge(self, **services: Any) -> Edge:
        settings = self.edge_settings(**services)

        async def start() -> EdgeServer:
            server = EdgeServer(settings, "127.0.0.1", 0, grpc_port=0)
            await server.start()
            return server

        server = self.loop.run(start())
        self.edges.append(server)
        return Edge(server, server.url.rstrip("/"), server.grpc.address)

    def inflight(self) -> dict[str, int]:
        """Streams in progress on each backend (the gRPC servers' own counters)."""
        counts = {"tts": self.tts.tracker.inflight, "audio_features": self.features.tracker.inflight}
        counts["renderer"] = sum(r.tracker.inflight for r in self.renderers)
        return counts

    def close(self) -> None:
        async def stop() -> None:
            for edge in self.edges:
                await edge.stop()
            for server in [self.tts, self.features, *self.renderers]:
                await server.server.stop(0)
            for servicer in self.renderer_servicers:
                await servicer.batcher.close()

        try:
            self.loop.run(stop(), timeout=60)
        finally:
            self.loop.close()


_shared: Stack | None = None


def shared_stack(request: pytest.FixtureRequest) -> Stack:
    """One single-renderer stack for every edge test module of a pytest run (started on
    first use, stopped when the session ends), so each module does not pay its start-up."""
    global _shared
    if _shared is None:
        _shared = Stack(Path(tempfile.mkdtemp(prefix="edge-stack-")))
        request.session.addfinalizer(_close_shared)
    return _shared


def _close_shared() -> None:
    global _shared
    if _shared is not None:
        stack, _shared = _shared, None
        stack.close()
        shutil.rmtree(stack.root, ignore_errors=True)


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("edge-stack"), renderers=2)
    try:
        yield stack
    finally:
        stack.close()


def tone_pcm(seconds: float, rate: int = 16000, freq: float = 220.0) -> bytes:
    """A voiced-sounding test signal (a tone with a slow level swing), as s16le."""
    t = np.arange(int(seconds * rate)) / rate
    level = 0.3 + 0.25 * np.sin(2 * np.pi * 2.5 * t)
    return float_to_s16le(level * np.sin(2 * np.pi * freq * t))


def wav_bytes(pcm: bytes, rate: int = 16000, channels: int = 1) -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def test_health_reports_every_service(two_replicas: Stack) -> None:
    edge = two_replicas.edge()
    with edge.client() as client:
        health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["services"] == {"edge": "ok", "tts": "ok", "audio_features": "ok",
                                  "renderer": "ok"}


def test_two_renderer_replicas_behind_one_target_both_get_sessions(two_replicas: Stack) -> None:
    """The renderer target lists two ports; round_robin spreads sessions over both."""
    edge = two_replicas.edge()
    before = [s.batcher.items_run for s in two_replicas.renderer_servicers]
    pcm = tone_pcm(0.4)
    with edge.client() as client:
        for _ in range(6):
            reply = client.post("/generate-from-audio", params={"format": "av", "realtime": "0"},
                                files={"audio_file": ("a.wav", wav_bytes(pcm), "audio/wav")})
            assert reply.status_code == 200, reply.text
    rendered = [s.batcher.items_run - b for s, b in zip(two_replicas.renderer_servicers, before,
                                                        strict=True)]
    assert all(n >= 10 for n in rendered), rendered
    assert sum(rendered) == 6 * 10


def test_frame_audio_is_the_input_audio(two_replicas: Stack) -> None:
    """Through both replicas: the audio slices joined back are the uploaded samples."""
    from services.edge import stream_format

    edge = two_replicas.edge()
    pcm = tone_pcm(0.5)
    with edge.client() as client:
        reply = client.post("/generate-from-audio", params={"format": "av", "realtime": "0"},
                            files={"audio_file": ("a.wav", wav_bytes(pcm), "audio/wav")})
    frames = [(h, p) for h, p in stream_format.parse(reply.content) if h["type"] == "frame"]
    audio = b"".join(p[h["image_bytes"]:] for h, p in frames)
    assert len(frames) == 13  # ceil(0.5 s * 25)
    assert audio[: len(pcm)] == pcm and not audio[len(pcm):].strip(b"\0")
    assert np.abs(s16le_to_float(audio)).max() > 0.3
