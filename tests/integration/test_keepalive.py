"""The keepalive policy (issue 14, fault 1), with windows shrunk so CI proves it in seconds.

Clients ping every `keepalive_time_s`; a server that permits pings less often than that
strikes each early ping and, after `max_ping_strikes`, answers GOAWAY `too_many_pings`,
killing every stream on the connection, a silent one included. Main had clients pinging
every 30 s against gRPC's default server minimum of 5 minutes: a silent stream died at
90-120 s. Here the same mismatch, scaled down, reproduces it in seconds, and one
`TransportConfig` for both sides keeps a silent stream alive across many ping windows.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from synctalk.config import ServerConfig, TransportConfig, load_settings
from synctalk.rpc.channel import dial
from synctalk.rpc.server import GrpcServer, channel_options

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Clients ping every 0.3 s; the server of the mismatch permits one ping per 5 s, the
# matched server one per 0.1 s (the defaults keep the same 3x margin: 30 s vs 10 s).
CLIENT = TransportConfig(keepalive_time_s=0.3, keepalive_timeout_s=2.0, min_ping_interval_s=0.1)
STRICT_SERVER = TransportConfig(keepalive_time_s=5.0, min_ping_interval_s=5.0)
SILENCE_S = 4.0  # >= 13 client pings


async def silent_watch(server_transport: TransportConfig) -> tuple[list[int], grpc.RpcError | None]:
    """A health Watch stream that stays silent for SILENCE_S, then sees one status change;
    the statuses it saw and the error that ended it, if any."""
    server = GrpcServer([], lambda server: None,
                        config=ServerConfig(transport=server_transport))
    await server.start()
    seen: list[int] = []
    error: grpc.RpcError | None = None
    try:
        async with dial(server.address, transport=CLIENT) as channel:
            call = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=SILENCE_S + 10)
            try:
                seen.append((await call.read()).status)
                await asyncio.sleep(SILENCE_S)
                await server.health.set("", NOT_SERVING)
                reply = await asyncio.wait_for(call.read(), 5)
                if reply is not grpc.aio.EOF:
                    seen.append(reply.status)
            except grpc.RpcError as err:
                error = err
            finally:
                call.cancel()
    finally:
        await server.server.stop(0)
    return seen, error


def test_a_server_stricter_than_its_clients_kills_a_silent_stream_with_too_many_pings() -> None:
    """The fault on main, scaled down: the test detects it."""
    seen, error = asyncio.run(silent_watch(STRICT_SERVER))
    assert error is not None, f"the silent stream survived: {seen}"
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "too_many_pings" in (error.details() or "").lower().replace(" ", "_"), error.details()


def test_one_transport_policy_keeps_a_silent_stream_alive_then_it_speaks_again() -> None:
    seen, error = asyncio.run(silent_watch(CLIENT))
    assert error is None, error
    assert seen == [SERVING, NOT_SERVING]


def test_clients_ping_no_faster_than_servers_permit_by_default() -> None:
    transport = load_settings().server.transport
    assert transport.min_ping_interval_s <= transport.keepalive_time_s
    options = dict(channel_options(1024, transport))
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= options["grpc.keepalive_time_ms"]
    # Connections are renewed (clients re-resolve and find new replicas), and a call open on
    # one may run as long as the longest live call before the age closes it.
    assert transport.max_connection_age_grace_s >= load_settings().services.max_call_s


def test_a_policy_that_would_strike_its_own_clients_is_refused() -> None:
    with pytest.raises(ValidationError, match="too_many_pings"):
        TransportConfig(keepalive_time_s=10, min_ping_interval_s=30)


def test_transport_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCTALK_SERVER__TRANSPORT__KEEPALIVE_TIME_S", "2")
    monkeypatch.setenv("SYNCTALK_SERVER__TRANSPORT__MIN_PING_INTERVAL_S", "1")
    transport = load_settings().server.transport
    assert (transport.keepalive_time_s, transport.min_ping_interval_s) == (2, 1)
