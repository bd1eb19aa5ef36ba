"""How the edge's HTTP errors look: the documented error tables and the exception handlers.

Documented on every operation (schemathesis checks responses against the schema): the edge's
own errors are {"detail": message}, FastAPI's validation errors a list."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.edge import mjpeg, stream_format
from services.edge.errors import EdgeError
from services.edge.validation import validation_error
from synctalk.log import get_logger

log = get_logger("services.edge.http")


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a message, or FastAPI's list of validation errors."""

    detail: str | list[dict[str, Any]]
    service: str | None = Field(None, description="The downstream service at fault")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a body that cannot be parsed"},
    404: {"model": ErrorBody, "description": "unknown avatar, voice or session"},
    422: {"model": ErrorBody, "description": "bad input"},
    503: {"model": ErrorBody, "description": "a downstream service is down or busy"},
}

DEBUG_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "a token is configured (or the edge is not on loopback) and the "
                         "X-Debug-Token header does not match"},
    404: {"description": "the debug endpoints are off (debug.endpoints = false, the default)"},
}

STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The stream; header X-Session-Id names its session",
          "content": {mjpeg.MEDIA_TYPE: {}, stream_format.MEDIA_TYPE: {}}},
    404: {"description": "unknown avatar, voice or session"},
    408: {"description": "upload body not received within services.upload_timeout_s"},
    413: {"description": "upload too large or too long"},
    415: {"description": "upload is not audio"},
    422: {"description": "bad input (empty or over-long text, undecodable audio)"},
    503: {"description": "too many sessions (Retry-After) or a downstream service is down "
                         "(the body names it)"},
}


async def edge_error(request: Request, err: EdgeError) -> JSONResponse:
    """An EdgeError as its status, headers and {"detail", "service"} body."""
    body: dict[str, Any] = {"detail": err.message}
    if err.service != "edge":
        body["service"] = err.service
    return JSONResponse(body, status_code=err.http_status, headers=err.headers)


async def internal_error(request: Request, err: Exception) -> JSONResponse:
    """A bug: logged with its traceback; the client gets a bare 500."""
    log.exception("http.error", path=request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors 422 with FastAPI's list, EdgeErrors as above, anything else 500."""
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(EdgeError, edge_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)
