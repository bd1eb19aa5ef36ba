"""The base every gRPC server of the project runs on.

Health (`grpc.health.v1`) and reflection are registered, message sizes are capped, each
stream's start, end and status code are logged with its session id, and SIGTERM/SIGINT
drain: health turns NOT_SERVING, new calls get UNAVAILABLE, in-flight streams may finish
within the grace period, then the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from synctalk.config import ServerConfig, TransportConfig
from synctalk.log import get_logger
from synctalk.rpc.errors import drain

SESSION_METADATA_KEY = "x-session-id"
_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

log = get_logger("synctalk.rpc")


def channel_options(max_message_bytes: int, transport: TransportConfig | None = None
                    ) -> list[tuple[str, Any]]:
    """Options shared by servers and clients: message caps and the keepalive policy.

    Both sides read one `TransportConfig`, so the clients' ping interval is always one the
    servers permit (a server that sees pings more often than it allows answers GOAWAY
    `too_many_pings` and kills every stream on the connection, a silent one included)."""
    transport = transport or TransportConfig()
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", _ms(transport.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", _ms(transport.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # What a server accepts: pings this often with or without data, and a few strikes.
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(transport.min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", transport.max_ping_strikes),
    ]


def server_options(transport: TransportConfig | None = None) -> list[tuple[str, Any]]:
    """Server-only options: connections are renewed after `max_connection_age_s` (clients then
    re-resolve the name and reach new replicas); open calls get the age grace to finish."""
    transport = transport or TransportConfig()
    return [
        ("grpc.max_connection_age_ms", _ms(transport.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", _ms(transport.max_connection_age_grace_s)),
    ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def session_id_from(context: grpc.aio.ServicerContext) -> str:
    """The caller's session id if it sent a well-formed one, else a new server-made id."""
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_METADATA_KEY and isinstance(value, str) and _SESSION_RE.match(value):
            return value
    return uuid.uuid4().hex[:16]


class _StreamTracker(grpc.aio.ServerInterceptor):
    """Counts in-flight calls, refuses new ones while draining, logs start/end/status."""

    def __init__(self) -> None:
        self.inflight = 0
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        quiet = method.startswith(_QUIET_PREFIXES)
        if quiet:
            return handler
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, handler.stream_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._wrap_unary(method, handler.unary_unary),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _enter(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def _leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()

    @contextlib.asynccontextmanager
    async def _counted(self, context: grpc.aio.ServicerContext, event: str
                       ) -> AsyncIterator[dict[str, Any]]:
        """One call in flight: its status from how it ended (an unexpected error becomes
        INTERNAL, logged), then `<event>.end` with the fields the caller filled in."""
        self._enter()
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        fields: dict[str, Any] = {}
        try:
            yield fields
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception(f"{event}.error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            self._leave()
            log.info(f"{event}.end", status=code.name, **fields,
                     duration_ms=round((time.perf_counter() - started) * 1000, 1))

    def _wrap_stream(self, method: str, behaviour: Callable[..., AsyncIterator[Any]]):
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if self.draining:
                if hasattr(request, "__aiter__"):
                    # What the client already sent first, so it sees UNAVAILABLE, not the
                    # CANCELLED/INTERNAL of a write that failed after the status (grpc#36066).
                    await drain(request)
                await context.abort(grpc.StatusCode.UNAVAILABLE, "server is draining")
            session = session_id_from(context)
            structlog.contextvars.bind_contextvars(session_id=session, method=method)
            async with self._counted(context, "stream") as fields:
                fields["messages_sent"] = 0
                log.info("stream.start", peer=context.peer())
                async for response in behaviour(request, context):
                    fields["messages_sent"] += 1
                    yield response

        return wrapped

    def _wrap_unary(self, method: str, behaviour: Callable[..., Awaitable[Any]]):
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "server is draining")
            structlog.contextvars.bind_contextvars(session_id=session_id_from(context), method=method)
            async with self._counted(context, "call"):
                return await behaviour(request, context)

        return wrapped


class GrpcServer:
    """A grpc.aio server with health, reflection, size caps, logging and graceful drain."""

    def __init__(
        self,
        service_names: Iterable[str],
        register: Callable[[grpc.aio.Server], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ServerConfig | None = None,
    ) -> None:
        config = config or ServerConfig()
        self.service_names = list(service_names)
        self.tracker = _StreamTracker()
        self.drain_grace_s = config.drain_grace_s
        options = (channel_options(config.max_message_bytes, config.transport)
                   + server_options(config.transport) + [
            ("grpc.max_concurrent_streams", config.max_concurrent_streams),
            ("grpc.so_reuseport", 0),
        ])
        self.server = grpc.aio.server(interceptors=[self.tracker], options=options)
        register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            self.server,
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind {host}:{port}")
        self.host = host
        self._stopped = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        await self.server.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("server.start", address=self.address, services=self.service_names)

    async def drain_and_stop(self) -> None:
        """Refuse new calls, report NOT_SERVING, let in-flight streams finish, then stop."""
        if self.tracker.draining:
            await self._stopped.wait()
            return
        self.tracker.draining = True
        await self.health.enter_graceful_shutdown()
        log.info("server.draining", inflight=self.tracker.inflight, grace_s=self.drain_grace_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.tracker.idle.wait(), timeout=self.drain_grace_s)
        await self.server.stop(grace=1.0)
        log.info("server.stopped", inflight_left=self.tracker.inflight)
        self._stopped.set()

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()

    async def run_until_signal(self) -> None:
        """Start, then serve until SIGTERM or SIGINT, then drain."""
        await self.start()
        await stop_signal().wait()
        await self.drain_and_stop()


def stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT on the running loop: the cue to drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def service_server(config: ServerConfig, service_name: str,
                   register: Callable[[grpc.aio.Server], None], host: str, port: int) -> GrpcServer:
    """A GrpcServer for one service with the limits of `settings.server`."""
    return GrpcServer([service_name], register, host=host, port=port, config=config)
