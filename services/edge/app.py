"""The edge's HTTP API (FastAPI) and web page: the app put together.

Compatible with the seed server (same paths, `audio_file` form field, MJPEG with boundary
`frame`, `X-Audio-Duration`, the debug JSON), with its defects fixed: bad input gets a 4xx
with a message (never a 500 or a traceback), uploads are decoded and resampled, no temporary
file is left, and frames leave joined with their audio. The routes live in
services/edge/routes/, one router per concern; this module only assembles them with the
middleware and the error handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services.edge.access import AccessPolicy
from services.edge.access_http import AccessMiddleware
from services.edge.routes import (
    avatars,
    debug,
    generation,
    health,
    live,
    page,
    sessions,
    tts,
)
from services.edge.routes.error_responses import ERROR_RESPONSES, install_error_handlers
from services.edge.runtime import EdgeRuntime
from services.edge.uploads import Uploads
from services.edge.validation import StrictJsonRoute
from synctalk.config import Settings

ROUTERS = (page.router, generation.router, sessions.router, avatars.router, tts.router,
           health.router, debug.router, live.router)


def create_app(settings: Settings, runtime: EdgeRuntime | None = None,
               host: str = "127.0.0.1") -> FastAPI:
    """The FastAPI app; `runtime` is shared with the gRPC Avatar service when given, `host`
    is the address the app listens on (debug endpoints need a token off loopback)."""
    owns_runtime = runtime is None
    rt = runtime or EdgeRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_runtime:
            await rt.close()

    app = FastAPI(
        title="SyncTalk 2D edge",
        version="0.1.0",
        description="Talking-head streams from text or audio. Streams start with the first "
                    "lip-synced frame; the mouth trails the audio input by the feature "
                    "look-ahead (8 frames, 320 ms) plus processing, and every frame travels "
                    "with the audio that plays with it.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.runtime = rt
    app.state.listen_host = host
    app.state.uploads = Uploads(settings.services)
    app.router.route_class = StrictJsonRoute  # NaN, Infinity, lone surrogates: 422
    install_error_handlers(app)
    if settings.services.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.services.cors_origins,
            allow_methods=["GET", "POST"], allow_headers=["Content-Type", "X-Debug-Token"],
            expose_headers=["X-Session-Id", "X-Audio-Duration", "Retry-After"],
        )
    app.state.access = AccessPolicy(settings.services, host)
    app.add_middleware(AccessMiddleware, policy=app.state.access)
    page.mount_static(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
