"""The edge process: the HTTP API (uvicorn) and the gRPC Avatar service, sharing one runtime.

SIGTERM/SIGINT drain both: the gRPC server reports NOT_SERVING and refuses new calls,
uvicorn stops accepting connections, in-flight streams get the grace period, then both stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import grpc
import uvicorn

from services.edge import live_protocol
from services.edge.access import AccessPolicy
from services.edge.animate import AvatarServicer
from services.edge.app import create_app
from services.edge.runtime import EdgeRuntime
from synctalk.config import Settings
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc
from synctalk.rpc.server import GrpcServer, service_server, stop_signal

SERVICE_NAME = avatar_pb2.DESCRIPTOR.services_by_name["Avatar"].full_name

log = get_logger("services.edge")


def build_grpc_server(runtime: EdgeRuntime, host: str, port: int) -> GrpcServer:
    svc = runtime.settings.services
    servicer = AvatarServicer(runtime, AccessPolicy(svc, host))

    def register(server: grpc.aio.Server) -> None:
        avatar_pb2_grpc.add_AvatarServicer_to_server(servicer, server)

    return service_server(runtime.settings.server, SERVICE_NAME, register, host, port)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve` drains gRPC and HTTP together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EdgeServer:
    """Both listeners of one edge; `start`, then `stop` (tests) or `run_until_signal`."""

    def __init__(self, settings: Settings, host: str, http_port: int,
                 grpc_port: int | None = None) -> None:
        self.settings = settings
        self.runtime = EdgeRuntime(settings)
        self.app = create_app(settings, self.runtime, host=host)
        grpc_port = settings.services.edge_grpc_port if grpc_port is None else grpc_port
        self.grpc = build_grpc_server(self.runtime, host, grpc_port)
        config = uvicorn.Config(
            self.app, host=host, port=http_port, log_config=None, access_log=False,
            timeout_graceful_shutdown=max(1, int(settings.server.drain_grace_s)),
            ws="websockets-sansio", ws_max_size=live_protocol.MAX_MESSAGE_BYTES,
            ws_per_message_deflate=False, lifespan="on",
        )
        self.http = _Uvicorn(config)
        self._http_task: asyncio.Task[None] | None = None
        self.host = host

    @property
    def http_port(self) -> int:
        servers = getattr(self.http, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.http.config.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}/"

    async def start(self) -> None:
        await self.grpc.start()
        self._http_task = asyncio.ensure_future(self.http.serve())
        while not self.http.started:
            if self._http_task.done():
                self._http_task.result()
                raise OSError(f"the HTTP server did not start on {self.host}")
            await asyncio.sleep(0.02)
        log.info("edge.start", url=self.url, grpc=self.grpc.address)

    async def stop(self) -> None:
        self.runtime.sessions.cancel_all("shutdown")
        self.http.should_exit = True
        await asyncio.gather(self.grpc.drain_and_stop(), self._wait_http())
        await self.runtime.close()

    async def _wait_http(self) -> None:
        if self._http_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._http_task

    async def run_until_signal(self) -> None:
        await self.start()
        stop = stop_signal()
        done = asyncio.ensure_future(self._wait_http())
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([done, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await self.drain()

    async def drain(self) -> None:
        """Refuse new work, let streams finish within the grace period, then stop."""
        self.http.should_exit = True
        await asyncio.gather(self.grpc.drain_and_stop(), self._wait_http())
        self.runtime.sessions.cancel_all("shutdown")
        await self.runtime.close()


async def serve(settings: Settings, host: str, port: int) -> None:
    """Run the edge: HTTP on `port`, gRPC Avatar on `services.edge_grpc_port`."""
    server = EdgeServer(settings, host, port)
    await server.run_until_signal()
