"""What routes get from the app: the runtime, the upload reader, shared query parameters."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from services.edge.runtime import EdgeRuntime
from services.edge.uploads import Uploads
from services.edge.validation import StrictJsonRoute


def new_router(**kwargs: Any) -> APIRouter:
    """A router whose JSON bodies refuse NaN, Infinity and lone surrogates (422): an
    included route keeps its router's route class, not the app's."""
    return APIRouter(route_class=StrictJsonRoute, **kwargs)


def get_runtime(request: Request) -> EdgeRuntime:
    """The runtime the app was built with (`app.state.runtime`)."""
    runtime: EdgeRuntime = request.app.state.runtime
    return runtime


def get_uploads(request: Request) -> Uploads:
    """The upload reader, made once per app from the runtime's limits."""
    state = request.app.state
    uploads: Uploads | None = getattr(state, "uploads", None)
    if uploads is None:
        uploads = state.uploads = Uploads(get_runtime(request).settings.services)
    return uploads


Runtime = Annotated[EdgeRuntime, Depends(get_runtime)]
UploadReader = Annotated[Uploads, Depends(get_uploads)]

Format = Literal["mjpeg", "av"]
FormatQuery = Annotated[Format, Query(
    description="`mjpeg` (default): multipart/x-mixed-replace JPEG frames for an <img>, no "
                "sound. `av`: application/vnd.synctalk.av-stream, each frame with its 640 "
                "samples of audio and pts (see docs/api-reference.md)")]
SessionQuery = Annotated[str | None, Query(
    description="A session id from an earlier response (X-Session-Id): the new utterance "
                "interrupts that session's utterance in progress (barge-in)")]
RealtimeQuery = Annotated[bool, Query(
    description="Pace frames in real time (default): MJPEG at 25 frames/s, the sound stream "
                "at most 1 s ahead; false sends them as fast as they are made")]
AvatarQuery = Annotated[str, Query(max_length=64, description="Avatar name; empty: the default")]
VoiceQuery = Annotated[str, Query(max_length=128, description="TTS voice id; empty: the default")]
StartFrameQuery = Annotated[int | None, Query(
    ge=0, le=2**31 - 1,
    description="Avatar source frame the utterance starts its walk at: a player idling on "
                "the loop from GET /idle passes the `next_start` of the idle frame it shows, "
                "so speech goes on from it without a jump. Default: the frame after the one "
                "the session's last utterance ended on")]
