"""A real in-process stack on 127.0.0.1 (tts, audio_features, renderer replicas and edges on one
background event loop), shared by the edge test modules."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from services.edge.server import EdgeServer
from synctalk.config import Settings, load_settings
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2_grpc
from synctalk.rpc.server import GrpcServer
from tests.support.avatars import make_avatar
from tests.support.loop import BackgroundLoop

AVATAR = "demo"
AVATAR_SIZE = (160, 128)  # width, height: small and not square


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
        server = services.pop("server", {})
        return load_settings(
            models={"device": "cpu", "avatars_dir": str(self.store)},
            services={**targets, **services},
            server=server,
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

    def settle(self, edge: Edge) -> None:
        """Wait for `edge` and the backends to drop what the last request held; assert it."""
        deadline = time.monotonic() + 5
        while (edge.server.runtime.sessions.active or any(self.inflight().values())) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert edge.server.runtime.sessions.active == 0
        assert self.inflight() == {"tts": 0, "audio_features": 0, "renderer": 0}

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


@contextmanager
def animate_stub(edge: Edge) -> Iterator[avatar_pb2_grpc.AvatarStub]:
    """An Avatar stub on `edge`'s gRPC port, its channel closed afterwards."""
    with grpc.insecure_channel(edge.grpc_address) as channel:
        yield avatar_pb2_grpc.AvatarStub(channel)


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
