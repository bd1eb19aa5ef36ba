"""Renderer replicas joining and leaving a running stack, every service a real process.

The edge's renderer target is one DNS name (served by `tests.dns_server`, as a Kubernetes
headless Service's name lists its ready pods) and the replicas listen on one port at
127.0.0.1, 127.0.0.2 and 127.0.0.3. The edge re-resolves the name and sends each new stream
to the replica with the fewest open streams (services/edge/balancer.py): a third replica
that joins takes new sessions within seconds, and one that dies ends only its own sessions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from tests.support.dns import DnsServer
from tests.support.faults import (
    end_of,
    figure,
    log_events,
    replica_of,
    short_generation,
    upload,
    warm_renderer,
)
from tests.support.paths import free_port
from tests.support.processes import AvStream, EdgeProcess, ProcessStack, ServiceProcess, wait_until

NAME = "renderer.synctalk.test"
JOIN_LIMIT_S = 10.0
LONG_S = 6.0


@dataclass
class Replicas:
    stack: ProcessStack
    dns: DnsServer
    edge: EdgeProcess
    renderers: list[ServiceProcess]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    stack = ProcessStack(tmp_path_factory.mktemp("replicas"))
    port = free_port()
    renderers = [ServiceProcess(f"renderer{i}", "renderer", port, stack.env, stack.root,
                                host=f"127.0.0.{i + 1}") for i in range(3)]
    stack.renderers = renderers
    stack.backends["renderer"] = renderers[0]
    dns = DnsServer(NAME, ["127.0.0.1", "127.0.0.2"])
    try:
        with stack.running():
            edge = stack.add_edge(targets={"renderer": dns.target(port)})
            for proc in stack.processes:  # the third replica too, but not in the name yet
                proc.start()
            for proc in stack.processes:
                proc.wait_ready()
            for proc in renderers:
                warm_renderer(proc)
            yield Replicas(stack, dns, edge, renderers)
    finally:
        dns.close()


def _time(record: dict[str, str]) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def joined(edge: EdgeProcess, replica: ServiceProcess) -> float:
    """When the edge logged that `replica` joined the name (0: not yet)."""
    records = [r for r in log_events(edge, "renderer.replica_joined")
               if r["address"] == f"ipv4:{replica.address}"]
    return _time(records[-1]) if records else 0.0


def started_at(replica: ServiceProcess, session_id: str | None) -> float:
    return next(_time(r) for r in log_events(replica, "stream.start")
                if r.get("session_id") == session_id)


def long_session(r: Replicas) -> tuple[AvStream, ServiceProcess]:
    session = AvStream(r.edge, "/generate-from-audio", **upload(LONG_S))
    session.wait_frames(1)
    assert session.session_id is not None
    return session, replica_of(r.renderers, session.session_id)


def short_session(r: Replicas) -> ServiceProcess:
    reply = short_generation(r.edge, "renderer")
    assert reply.status_code == 200, reply.text
    assert end_of(reply)["status"] == "complete"
    return replica_of(r.renderers, reply.headers["x-session-id"])


def test_a_joining_replica_takes_new_sessions_and_a_dying_one_ends_only_its_own(
        replicas: Replicas) -> None:
    first, second, third = replicas.renderers
    # Streams go by load, not by turn: two long sessions land on the two replicas.
    a, on_a = long_session(replicas)
    b, on_b = long_session(replicas)
    assert {on_a, on_b} == {first, second}

    # A third replica joins the name: once the edge has seen it, the next session goes to
    # it, the least loaded, within the limit of the join.
    replicas.dns.set(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    joined_at = time.time()
    wait_until(lambda: joined(replicas.edge, third), JOIN_LIMIT_S, "the edge to see the replica")
    c, on_c = long_session(replicas)
    assert on_c is third
    started = started_at(third, c.session_id)
    figure("replicas.join_to_seen_s", joined(replicas.edge, third) - joined_at, "s")
    figure("replicas.join_to_first_session_s", started - joined_at, "s")
    assert started - joined_at < JOIN_LIMIT_S

    # The replica holding b dies and leaves the name: b ends naming the renderer, a and c
    # finish complete, and new sessions go to the two replicas left.
    victim = on_b
    replicas.dns.set([p.host for p in replicas.renderers if p is not victim])
    killed_at = time.monotonic()
    victim.kill()
    b.finish(30)
    assert b.end is not None and b.end["status"] == "error", b.summary()
    assert b.end["service"] == "renderer" and b.end_at is not None
    figure("replicas.victim_session_end_after_kill_s", b.end_at - killed_at, "s")
    for session in (a, c):
        session.finish(30)
        assert session.end is not None and session.end["status"] == "complete", session.summary()
        assert session.frames == LONG_S * 25
    for _ in range(3):
        assert short_session(replicas) is not victim
