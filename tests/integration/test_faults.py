"""Reliability under faults (issue 8 §1), with every service a real process on 127.0.0.1.

- kill -9 of each backend in the middle of a session: the client's stream ends within a
  second with an "end" message naming the service, a new request gets 503 naming it,
  /health and gRPC Animate say so, and once the service is started again on its port the
  same edge (not restarted) uses it again.
- Two renderer replicas behind one target: losing one ends only the sessions it rendered.
- A channel reconnects within a second of its service coming back, however long it was down.

The stack (tests/support/fault_stack.py) is started once for the module.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from synctalk.rpc.channel import dial
from synctalk.rpc.server import GrpcServer
from tests.support import fault_stack
from tests.support.fault_stack import Faults, animate, ensure
from tests.support.faults import (
    FPS,
    assert_error_end,
    end_of,
    figure,
    long_session,
    replica_of,
    short_generation,
    upload,
)
from tests.support.paths import free_port
from tests.support.processes import AvStream, ServiceProcess, wait_until

faults, up = fault_stack.register()
LONG_UPLOAD_S = 40.0


# -- reconnection -------------------------------------------------------------------------


def test_a_channel_reconnects_within_a_second_however_long_the_service_was_down() -> None:
    """`dial` retries a lost service at most every second. With gRPC's default backoff
    (1 s growing 1.6x to 120 s, +-20 %), after 11 s down the next attempt would come
    1.4 to 7.8 s after the service is back, and minutes late after a longer outage."""
    down_s = 11.2

    async def main() -> float:
        port = free_port()
        async with dial(f"127.0.0.1:{port}") as channel:
            channel.get_state(try_to_connect=True)
            await asyncio.sleep(down_s)  # attempts fail, the backoff grows
            server = GrpcServer([], lambda server: None, port=port)
            await server.start()
            back = time.monotonic()
            try:
                while channel.get_state() != grpc.ChannelConnectivity.READY:
                    assert time.monotonic() - back < 15, "never reconnected"
                    await asyncio.sleep(0.01)
                return time.monotonic() - back
            finally:
                await server.server.stop(0)

    reconnect_s = asyncio.run(main())
    figure("channel.reconnect_after_service_back_s", reconnect_s, f"s (after {down_s:g} s down)")
    assert reconnect_s < 1.4


# -- kill -9 ------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["renderer", "audio_features", "tts"])
def test_kill_9_mid_session_ends_the_stream_naming_the_service_and_the_edge_recovers(
    up: Faults, service: str
) -> None:
    edge, proc = up.edge, up.stack.backends[service]
    session = long_session(edge, service, LONG_UPLOAD_S)
    assert not session.done.is_set(), session.summary()

    killed_at = time.monotonic()
    proc.kill()
    session.finish(10)
    assert_error_end(session, service)
    assert session.end["http_status"] == 503, session.summary()
    assert session.end["error"] == f"{service} service unavailable"
    error_s = session.end_at - killed_at
    figure(f"kill_{service}.stream_error_after_kill_s", error_s, "s")
    assert error_s < 1.0
    assert session.frames < LONG_UPLOAD_S * FPS  # it really was cut short

    # While it is down: a new request is refused at once, naming the service.
    started = time.monotonic()
    refused = short_generation(edge, service)
    figure(f"kill_{service}.refusal_s", time.monotonic() - started, "s")
    assert refused.status_code == 503, refused.text
    assert refused.json() == {"detail": f"{service} service unavailable", "service": service}
    assert refused.headers["retry-after"] == "5"
    health = edge.health()
    assert health[service] == "unavailable"
    assert all(state == "ok" for name, state in health.items() if name != service), health
    err = animate(edge, service)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == f"{service} service unavailable"

    # Started again on the same port: the same edge uses it again.
    restarted = time.monotonic()
    proc.start()
    proc.wait_ready()
    ready_s = time.monotonic() - restarted
    back_s = wait_until(lambda: edge.health()[service] == "ok", 10, f"the edge to see {service}")
    figure(f"kill_{service}.restart_ready_s", ready_s, "s")
    figure(f"kill_{service}.edge_reconnect_after_ready_s", back_s, "s")
    assert back_s < 3.0
    reply = short_generation(edge, service)
    assert reply.status_code == 200, reply.text
    assert end_of(reply)["status"] == "complete"
    assert animate(edge, service) is None


# -- renderer replicas --------------------------------------------------------------------


def test_killing_one_renderer_replica_ends_only_its_sessions(up: Faults) -> None:
    edge = up.pair
    ensure(up, [*up.stack.renderers, edge], edge)
    seconds = 3.0
    sessions: list[tuple[AvStream, ServiceProcess]] = []
    while len({proc.label for _, proc in sessions}) < 2:
        assert len(sessions) < 6, "round_robin never used the second replica"
        session = AvStream(edge, "/generate-from-audio", **upload(seconds))
        session.wait_frames(1)
        assert session.session_id is not None
        sessions.append((session, replica_of(up.stack.renderers, session.session_id)))
    victim = sessions[0][1]
    for session, _ in sessions:
        session.wait_frames(3)

    killed_at = time.monotonic()
    victim.kill()
    for session, replica in sessions:
        session.finish(30)
        assert session.end is not None, session.summary()
        if replica is victim:
            assert session.end["status"] == "error" and session.end["service"] == "renderer"
            assert session.end_at is not None and session.end_at - killed_at < 1.0
            figure("replica.victim_error_after_kill_s", session.end_at - killed_at, "s")
        else:
            assert session.end["status"] == "complete", session.summary()
            assert session.frames == seconds * FPS
    survivor = next(proc for proc in up.stack.renderers if proc is not victim)

    # New sessions all go to the replica that is left.
    for _ in range(4):
        reply = short_generation(edge, "renderer")
        assert reply.status_code == 200, reply.text
        assert end_of(reply)["status"] == "complete"
        assert replica_of(up.stack.renderers, reply.headers["x-session-id"]) is survivor
    assert edge.health()["renderer"] == "ok"  # one replica serving is enough
