"""The access policy in front of the HTTP API: every request is checked before a route runs,
so a refused upload is answered without its body being read."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from services.edge.access import AccessPolicy
from synctalk.log import get_logger

# Routes that start generation (costly: a session, TTS, rendering; GET /idle draws an avatar's
# idle loop on its first call per avatar and quality); the rest only read.
GENERATION_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/idle"),
    ("GET", "/generate"),
    ("POST", "/generate"),
    ("POST", "/generate-from-audio"),
    ("GET", "/get-tts-audio"),
})

log = get_logger("services.edge.access")


def request_kind(method: str, path: str) -> str:
    """The access kind of an HTTP request (see services.edge.access.KINDS)."""
    return "generate" if (method.upper(), path.rstrip("/") or "/") in GENERATION_ROUTES else "read"


class AccessMiddleware:
    """Pure ASGI middleware (no body buffering): refuses with JSON `{"detail": reason}`."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        client_host = client[0] if client else ""
        kind = request_kind(scope.get("method", "GET"), scope.get("path", "/"))
        denied = self.policy.check(headers, client_host, kind=kind)
        if denied is None:
            await self.app(scope, receive, send)
            return
        log.warning("access.denied", path=scope.get("path"), client=client_host,
                    status=denied.http_status, reason=denied.reason)
        body = json.dumps({"detail": denied.reason}).encode()
        response_headers = [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]
        response_headers += [(k.lower().encode(), v.encode()) for k, v in denied.headers.items()]
        await send({"type": "http.response.start", "status": denied.http_status,
                    "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
