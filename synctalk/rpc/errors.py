"""Status codes with field paths, the way every service reports bad input (DESIGN §3)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
import structlog

QUOTE_CHARS = 64  # of an input quoted in a status message
MAX_DETAILS_CHARS = 1024  # far below gRPC's 8 KiB metadata limit, whatever the input

StreamHandler = TypeVar("StreamHandler", bound=Callable[..., AsyncIterator[Any]])


def quote(value: str, limit: int = QUOTE_CHARS) -> str:
    """`value` quoted for a status message: its first `limit` characters, escaped."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


class RpcError(Exception):
    """An error that maps to a gRPC status; raised in service logic, turned into abort at the edge of a handler.

    The message is capped and made encodable, so an echoed input can never turn the status
    into RESOURCE_EXHAUSTED (details over the metadata limit) or fail to send."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        if len(message) > MAX_DETAILS_CHARS:
            message = message[:MAX_DETAILS_CHARS] + "…"
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, reason: str) -> RpcError:
    """INVALID_ARGUMENT naming the field path, e.g. `frame.features.shape: ...`."""
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {reason}")


def not_found(what: str, name: str) -> RpcError:
    return RpcError(grpc.StatusCode.NOT_FOUND, f"unknown {what} {quote(name)}")


def exhausted(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


async def abort(context: grpc.aio.ServicerContext, error: RpcError) -> NoReturn:
    await context.abort(error.code, error.message)
    raise AssertionError("unreachable")


async def drain(requests: AsyncIterator[Any], limit_s: float = 0.5, max_messages: int = 256) -> None:
    """Read what a client has already sent, up to its half-close or a short bound, before a
    stream is rejected. A grpc aio client whose pending write fails after the status arrived
    reports INTERNAL instead of that status (grpc/grpc#36066); draining first lets the real
    code through for clients that send their whole request at once."""
    with contextlib.suppress(Exception, TimeoutError):
        async with asyncio.timeout(limit_s):
            count = 0
            async for _ in requests:
                count += 1
                if count >= max_messages:
                    break


def rejects_bad_streams(event: str, log: structlog.stdlib.BoundLogger
                        ) -> Callable[[StreamHandler], StreamHandler]:
    """The edge of a servicer's streaming handler `(self, request_iterator, context)`: an
    RpcError it raises is logged as `event`, what the client already sent is drained, and the
    call ends with the error's status, so the handler itself only raises."""

    def decorate(handler: StreamHandler) -> StreamHandler:
        @functools.wraps(handler)
        async def guarded(self: Any, request_iterator: AsyncIterator[Any],
                          context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async with contextlib.aclosing(handler(self, request_iterator, context)) as replies:
                    async for reply in replies:
                        yield reply
            except RpcError as err:
                log.info(event, code=err.code.name, reason=err.message)
                await drain(request_iterator)
                await abort(context, err)

        return cast(StreamHandler, guarded)

    return decorate
