"""One error type for everything the edge refuses or cannot do, mapped to HTTP and gRPC alike.

Downstream gRPC failures become EdgeErrors that name the service at fault, so a user sees
"renderer service unavailable" rather than a transport message, and never a traceback.
Messages quote at most `QUOTE_CHARS` characters of any input and are always encodable, so
an error can always be rendered (as JSON, or as gRPC status details within the metadata
limit) whatever the client sent.
"""

from __future__ import annotations

import grpc

QUOTE_CHARS = 64  # of an input quoted in an error message
MAX_MESSAGE_CHARS = 1024  # of any error message (downstream details included)

# gRPC code -> HTTP status, for failures reported by a downstream service.
_HTTP_OF_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 422,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}


class EdgeError(Exception):
    """A refusal or failure with its HTTP status, gRPC code and a user-facing message."""

    def __init__(
        self,
        http_status: int,
        code: grpc.StatusCode,
        message: str,
        *,
        service: str = "edge",
        retry_after_s: int | None = None,
    ) -> None:
        message = printable(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.service = service
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}


def printable(text: str, limit: int | None = None) -> str:
    """`text` cut to `limit` characters (marked with "…") and with lone surrogates escaped,
    so it encodes as UTF-8."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def quote(value: str, limit: int = QUOTE_CHARS) -> str:
    """`value` quoted for an error message: its first `limit` characters, escaped."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def bad_input(message: str) -> EdgeError:
    return EdgeError(422, grpc.StatusCode.INVALID_ARGUMENT, message)


def unknown(what: str, name: str) -> EdgeError:
    return EdgeError(404, grpc.StatusCode.NOT_FOUND, f"unknown {what} {quote(name)}")


def too_large(message: str) -> EdgeError:
    return EdgeError(413, grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unsupported_media(message: str) -> EdgeError:
    return EdgeError(415, grpc.StatusCode.INVALID_ARGUMENT, message)


def busy(message: str, retry_after_s: int = 2) -> EdgeError:
    return EdgeError(503, grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry_after_s=retry_after_s)


def from_rpc(service: str, err: grpc.aio.AioRpcError | grpc.RpcError) -> EdgeError:
    """Translate a downstream status into an EdgeError naming `service`."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (err.details() if callable(getattr(err, "details", None)) else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return EdgeError(503, code, f"{service} service unavailable", service=service, retry_after_s=5)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return EdgeError(503, code, f"{service} service busy: {details}", service=service,
                         retry_after_s=2)
    if code in _HTTP_OF_CODE:
        return EdgeError(_HTTP_OF_CODE[code], code, details or f"{service}: {code.name}",
                         service=service)
    return EdgeError(502, code, f"{service} service failed ({code.name})", service=service)
