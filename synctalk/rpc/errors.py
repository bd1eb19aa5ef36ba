"""Status codes with field paths, the way every service reports bad input (DESIGN §3)."""

from __future__ import annotations

from typing import NoReturn

import grpc


class RpcError(Exception):
    """An error that maps to a gRPC status; raised in service logic, turned into abort at the edge of a handler."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, reason: str) -> RpcError:
    """INVALID_ARGUMENT naming the field path, e.g. `frame.features.shape: ...`."""
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {reason}")


def not_found(what: str, name: str) -> RpcError:
    return RpcError(grpc.StatusCode.NOT_FOUND, f"unknown {what} {name!r}")


def exhausted(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


async def abort(context: grpc.aio.ServicerContext, error: RpcError) -> NoReturn:
    await context.abort(error.code, error.message)
    raise AssertionError("unreachable")
