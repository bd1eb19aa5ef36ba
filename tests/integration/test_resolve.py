"""Target parsing and resolution for the edge's per-replica channels (synctalk/rpc/resolve.py),
against a real DNS server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from synctalk.rpc.resolve import Target, parse_target, query_a, resolve
from tests.support.dns import DnsServer


@pytest.mark.parametrize(("target", "expected"), [
    ("127.0.0.1:50063", Target(port=50063, addresses=("ipv4:127.0.0.1:50063",))),
    ("[::1]:5", Target(port=5, addresses=("ipv6:[::1]:5",))),
    ("ipv4:127.0.0.1:1,127.0.0.2:2", Target(port=0, addresses=("ipv4:127.0.0.1:1",
                                                                "ipv4:127.0.0.2:2"))),
    ("renderer:50063", Target(port=50063, host="renderer")),
    ("dns:///renderer:50063", Target(port=50063, host="renderer")),
    ("dns://10.0.0.10/renderer:50063", Target(port=50063, host="renderer",
                                              dns_server=("10.0.0.10", 53))),
    ("unix:/run/renderer.sock", None),
    ("renderer", None),  # no port: left to gRPC
])
def test_parse_target(target: str, expected: Target | None) -> None:
    assert parse_target(target) == expected


def test_resolution_follows_the_name() -> None:
    dns = DnsServer("renderer.test", ["127.0.0.2", "127.0.0.1"])
    try:
        target = parse_target(dns.target(7000))
        assert target is not None and target.dynamic
        assert asyncio.run(resolve(target)) == ("ipv4:127.0.0.1:7000", "ipv4:127.0.0.2:7000")
        dns.set(["127.0.0.3"])
        assert asyncio.run(resolve(target)) == ("ipv4:127.0.0.3:7000",)
        assert query_a(("127.0.0.1", dns.port), "other.test", 1.0) == []  # NXDOMAIN
    finally:
        dns.close()


def test_system_resolver_and_unreachable_server() -> None:
    assert asyncio.run(resolve(Target(port=1, host="localhost")))[0].endswith(":1")
    with pytest.raises(OSError):
        query_a(("127.0.0.1", 9), "renderer.test", 0.2)  # nothing listens: refused or timeout
