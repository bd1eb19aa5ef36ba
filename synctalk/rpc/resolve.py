"""The addresses behind a gRPC target, resolved by the caller, so that it can hold one
channel per replica and choose between them itself (gRPC's own policies cannot weigh load).

Target forms follow gRPC's naming (doc/naming.md): `ipv4:a:p,b:p` and `ipv6:[a]:p,...` are
fixed lists; `host:port`, `dns:host:port` and `dns:///host:port` resolve with the system
resolver; `dns://server[:port]/host:port` asks that DNS server (as gRPC's c-ares resolver
does). Anything else (`unix:`, no port) is `None`: the caller leaves it to gRPC.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass

_A, _AAAA, _IN = 1, 28, 1


@dataclass(frozen=True)
class Target:
    """A resolvable target: fixed `addresses`, or `host` to look up (at `dns_server`)."""

    port: int
    host: str = ""
    addresses: tuple[str, ...] = ()
    dns_server: tuple[str, int] | None = None

    @property
    def dynamic(self) -> bool:
        return bool(self.host)


def _split_host_port(text: str) -> tuple[str, int] | None:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host, int(port)


def channel_address(ip: str, port: int) -> str:
    """A gRPC target for exactly this one address."""
    return f"ipv6:[{ip}]:{port}" if ":" in ip else f"ipv4:{ip}:{port}"


def parse_target(target: str) -> Target | None:
    """What `resolve` needs to know about `target`; None if only gRPC can resolve it."""
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            parts = [_split_host_port(p) for p in target[len(scheme):].split(",")]
            if not parts or any(p is None for p in parts):
                return None
            ports = {p[1] for p in parts if p}
            return Target(port=next(iter(ports)) if len(ports) == 1 else 0,
                          addresses=tuple(channel_address(*p) for p in parts if p))
    server: tuple[str, int] | None = None
    if target.startswith("dns://"):
        authority, _, target = target[len("dns://"):].partition("/")
        if authority:
            server = _split_host_port(authority) or (authority, 53)
    elif target.startswith("dns:"):
        target = target[len("dns:"):]
    elif "://" in target or target.startswith("unix:"):
        return None
    parsed = _split_host_port(target)
    if parsed is None:
        return None
    host, port = parsed
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return Target(port=port, host=host, dns_server=server)
    return Target(port=port, addresses=(channel_address(host, port),))


async def resolve(target: Target, timeout_s: float = 2.0) -> tuple[str, ...]:
    """Every address of `target` as a one-address gRPC target, sorted; raises OSError."""
    if not target.dynamic:
        return target.addresses
    loop = asyncio.get_running_loop()
    if target.dns_server is not None:
        ips = await loop.run_in_executor(None, query_a, target.dns_server, target.host, timeout_s)
    else:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), timeout_s)
        ips = [str(info[4][0]) for info in infos]
    return tuple(sorted({channel_address(ip, target.port) for ip in ips}))


def query_a(server: tuple[str, int], name: str, timeout_s: float) -> list[str]:
    """The A records of `name` from one DNS server over UDP (no cache, no search list)."""
    qid = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode("idna")
                        for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", _A, _IN)
    with socket.socket(socket.AF_INET6 if ":" in server[0] else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.sendto(packet, server)
        while True:
            reply, _ = sock.recvfrom(4096)
            if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == qid:
                break
    _, flags, qdcount, ancount = struct.unpack(">HHHH", reply[:8])
    if flags & 0x000F not in (0, 3):  # NOERROR, NXDOMAIN (no addresses)
        raise OSError(f"DNS server {server[0]}:{server[1]} answered rcode {flags & 0x000F}")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(reply, offset) + 4
    ips: list[str] = []
    for _ in range(ancount):
        offset = _skip_name(reply, offset)
        rtype, rclass, _ttl, length = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == _A and rclass == _IN and length == 4:
            ips.append(socket.inet_ntoa(reply[offset:offset + 4]))
        offset += length
    return ips


def _skip_name(packet: bytes, offset: int) -> int:
    while True:
        length = packet[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # compression pointer: two bytes end the name
            return offset + 2
        offset += 1 + length
