"""Who may use the edge: one policy for HTTP requests, gRPC calls and WebSocket handshakes.

- Off loopback, generation endpoints and live sessions need `services.api_token` (sent as
  `Authorization: Bearer <token>` or `x-api-token`), compared in constant time; with no token
  configured they are refused outright, so exposing the edge never opens it by accident.
- On loopback, an HTTP `Host` header must name an allowed host (`services.allowed_hosts`, any
  port): a page on another site whose DNS name was rebound to 127.0.0.1 is refused.
- Each client address gets a token bucket over generation requests and live sessions.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc

from synctalk.config import ServicesConfig

# What a request does: "generate" (an HTTP generation endpoint), "animate" (the gRPC live
# call), "live" (the browser's live-audio WebSocket) need the token off loopback and are rate
# limited; "read" (page, health, metadata) is only checked against the Host allowlist.
GUARDED_KINDS = frozenset({"generate", "animate", "live"})
KINDS = GUARDED_KINDS | {"read"}
_MAX_BUCKETS = 10_000  # client addresses remembered; the oldest are forgotten first


@dataclass(frozen=True)
class Denied:
    """A refusal, ready for any transport: HTTP status, gRPC code, reason, optional retry hint."""

    http_status: int
    grpc_code: grpc.StatusCode
    reason: str
    retry_after_s: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the refusal."""
        headers: dict[str, str] = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        if self.http_status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches only this machine ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a `Host` header value, lower-cased, port dropped ("[::1]:80" -> "[::1]")."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RateLimiter:
    """A token bucket per client address: `rate` requests per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """Spend one token for `client`: 0 if allowed, else the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, stamp = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


class AccessPolicy:
    """The edge's access rules for one listen address, built from `settings.services`."""

    def __init__(self, services: ServicesConfig, listen_host: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.loopback = (is_loopback(listen_host) if services.exposure == "auto"
                         else services.exposure == "loopback")
        self.token = services.api_token.encode()
        self.allowed_hosts = frozenset(h.strip().lower() for h in services.allowed_hosts)
        self.limiter = RateLimiter(services.rate_limit_per_s, services.rate_limit_burst, clock)

    def check(self, headers: Mapping[str, str], client_host: str, *, kind: str) -> Denied | None:
        """None if the request may go on, else why not. `headers` are HTTP headers or gRPC
        metadata (any case); a gRPC call carries no `Host` and is not checked against it."""
        if kind not in KINDS:
            raise ValueError(f"unknown access kind {kind!r}")
        lower = {k.lower(): v for k, v in headers.items()}
        if self.loopback and "host" in lower and host_name(lower["host"]) not in self.allowed_hosts:
            return Denied(403, grpc.StatusCode.PERMISSION_DENIED,
                          f"Host {lower['host']!r} is not allowed (services.allowed_hosts)")
        if kind not in GUARDED_KINDS:
            return None
        if not self.loopback:
            if not self.token:
                return Denied(403, grpc.StatusCode.PERMISSION_DENIED,
                              "this edge listens off loopback and has no services.api_token: "
                              "generation is refused")
            if not hmac.compare_digest(_sent_token(lower).encode(), self.token):
                return Denied(401, grpc.StatusCode.UNAUTHENTICATED,
                              "an API token is needed (Authorization: Bearer <token> or x-api-token)")
        wait = self.limiter.take(client_host)
        if wait > 0:
            return Denied(429, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"rate limit: {self.limiter.rate:g} requests/s per client",
                          retry_after_s=max(1, math.ceil(wait)))
        return None


def _sent_token(headers: Mapping[str, str]) -> str:
    bearer = headers.get("authorization", "")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip()
    return headers.get("x-api-token", "")
