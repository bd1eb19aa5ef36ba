"""Input the HTTP API refuses before any handler sees it, and error bodies that always render.

Python's JSON parser accepts `NaN`, `Infinity` and `-Infinity`, and `"\\ud800"` decodes to a
lone surrogate that no UTF-8 encoder (JSON renderer, protobuf, gRPC) accepts. Both are
refused here with 422 and a message naming the problem, on every route that reads a JSON
body; names and text are checked for lone surrogates again wherever they enter the runtime
(`check_unicode`), whatever route or protocol they came by. Validation errors are rendered
with every quoted input made safe: cut to `QUOTE_CHARS`, non-finite numbers spelled as text,
bytes and surrogates escaped, so rendering the error can never fail into a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from services.edge.errors import QUOTE_CHARS, bad_input, printable

MAX_AVATAR_CHARS = 64
MAX_VOICE_CHARS = 128


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text` (not encodable as UTF-8), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def check_unicode(value: str, field: str) -> str:
    """`value`, or 422 if it holds a lone surrogate."""
    at = lone_surrogate(value)
    if at is not None:
        raise bad_input(f"{field}: invalid Unicode (a lone surrogate at character {at})")
    return value


def check_name(value: str, field: str, limit: int) -> str:
    """An avatar or voice name as a client sent it: 422 past `limit` characters or with a
    lone surrogate, before it is sent anywhere (an over-long name would be echoed back)."""
    if len(value) > limit:
        raise bad_input(f"{field}: {len(value)} characters, the limit is {limit}")
    return check_unicode(value, field)


class _Refused(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _Refused(f"non-finite number {name} is not allowed")


def _find_problem(value: Any, path: str = "body") -> str | None:
    """Where `value` holds a lone surrogate or a non-finite number (`1e999` parses to
    infinity without being spelled so), and what; None if nowhere."""
    if isinstance(value, str):
        at = lone_surrogate(value)
        return None if at is None else f"{path}: invalid Unicode (a lone surrogate at character {at})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path}: non-finite number {value} is not allowed"
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_problem(key, path) or _find_problem(item, f"{path}.{printable(key, 32)}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_problem(item, f"{path}[{index}]")
            if found:
                return found
    return None


def parse_json(body: bytes) -> Any:
    """`body` as JSON; json.JSONDecodeError (which FastAPI answers with 422) for a document
    that is not JSON, that holds a non-finite number, or a lone surrogate (bytes that are
    not UTF-8 decode to lone surrogates, so they are refused the same way)."""
    text = body.decode("utf-8", "surrogateescape")
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except _Refused as err:
        raise json.JSONDecodeError(str(err), text, 0) from None
    problem = _find_problem(value)
    if problem is not None:
        raise json.JSONDecodeError(problem, text, 0)
    return value


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is parsed by `parse_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def safe(value: Any, limit: int = 256, depth: int = 0) -> Any:
    """`value` as JSON that always renders: strings cut to `limit` and escaped (an error's
    quoted `input` to QUOTE_CHARS), non-finite numbers and bytes as text, containers bounded."""
    if depth > 8:
        return "…"
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        return printable(bytes(value[: limit * 4]).decode("utf-8", "backslashreplace"), limit)
    if isinstance(value, str):
        return printable(value, limit)
    if isinstance(value, dict):
        return {printable(str(k), limit): safe(v, QUOTE_CHARS if k == "input" else limit,
                                               depth + 1)
                for k, v in list(value.items())[:32]}
    if isinstance(value, list | tuple):
        return [safe(v, limit, depth + 1) for v in list(value)[:32]]
    return printable(str(value), limit)


async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body ({"detail": [errors]}), with every quoted input made safe."""
    return JSONResponse({"detail": safe(list(err.errors()))}, status_code=422)
