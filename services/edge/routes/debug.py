"""The debug dump settings, behind a guard: off unless configured, and off loopback only
with the configured token."""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path

import grpc
from fastapi import Request
from pydantic import BaseModel, ConfigDict

from services.edge.access import is_loopback
from services.edge.debug import debug_status
from services.edge.errors import EdgeError
from services.edge.routes.deps import Runtime, new_router
from services.edge.routes.error_responses import DEBUG_RESPONSES
from services.edge.runtime import EdgeRuntime
from synctalk.config import DebugConfig
from synctalk.log import get_logger

log = get_logger("services.edge.http")


class DebugUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    save_frames: bool | None = None
    save_audio: bool | None = None


def _make_dump_dirs(debug: DebugConfig) -> None:
    """The folders the enabled dumps write to (a blocking call, run off the event loop)."""
    if debug.enabled:
        if debug.save_frames:
            Path(debug.frames_dir).mkdir(parents=True, exist_ok=True)
        if debug.save_audio:
            Path(debug.audio_dir).mkdir(parents=True, exist_ok=True)


def debug_allowed(request: Request, rt: EdgeRuntime) -> None:
    """Refuse unless config enables the endpoints, and off loopback (the app's
    `state.listen_host`; unknown counts as off) unless the request carries the token."""
    if not rt.debug.endpoints:
        raise EdgeError(404, grpc.StatusCode.NOT_FOUND,
                        "the debug endpoints are off (set debug.endpoints = true)")
    token = rt.debug.token
    if not token and not is_loopback(getattr(request.app.state, "listen_host", "")):
        raise EdgeError(403, grpc.StatusCode.PERMISSION_DENIED,
                        "the debug endpoints need debug.token on a non-loopback listener")
    sent = request.headers.get("x-debug-token", "")
    if token and not hmac.compare_digest(sent.encode(), token.encode()):
        raise EdgeError(403, grpc.StatusCode.PERMISSION_DENIED,
                        "debug settings need the X-Debug-Token header")


router = new_router(responses=DEBUG_RESPONSES)


@router.get("/debug/status", summary="Debug dump settings")
async def debug_get(request: Request, rt: Runtime) -> dict[str, object]:
    debug_allowed(request, rt)
    return debug_status(rt.debug)


@router.post("/debug/config", summary="Change the debug dump settings (omitted fields stay)")
async def debug_set(request: Request, rt: Runtime, update: DebugUpdate) -> dict[str, object]:
    debug_allowed(request, rt)  # after the body is parsed, as before: a bad body is a 422
    changes = update.model_dump(exclude_none=True)
    rt.debug = rt.debug.model_copy(update=changes)
    await asyncio.to_thread(_make_dump_dirs, rt.debug)
    log.info("debug.config", **debug_status(rt.debug))
    return debug_status(rt.debug)
