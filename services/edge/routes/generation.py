"""Generation: text or uploaded audio in, a stream of lip-synced frames out."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Query
from fastapi import Request as HttpRequest
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.edge import mjpeg
from services.edge.routes.deps import (
    AvatarQuery,
    FormatQuery,
    RealtimeQuery,
    Runtime,
    SessionQuery,
    StartFrameQuery,
    UploadReader,
    VoiceQuery,
    new_router,
)
from services.edge.routes.error_responses import STREAM_RESPONSES
from services.edge.routes.streams import generate
from services.edge.uploads import FIELD

router = new_router()


class GenerateBody(BaseModel):
    text: str = Field(description="What the avatar says")
    voice: str = Field("", max_length=128)
    avatar: str = Field("", max_length=64)


@router.get("/generate", summary="Speak text: a stream of frames (MJPEG, or with sound)",
            responses=STREAM_RESPONSES)
async def generate_get(
    rt: Runtime,
    text: Annotated[str, Query(description="What the avatar says")],
    voice: VoiceQuery = "",
    avatar: AvatarQuery = "",
    format: FormatQuery = "mjpeg",
    session_id: SessionQuery = None,
    realtime: RealtimeQuery = True,
    duration: Annotated[float | None, Query(
        description="Ignored; accepted for compatibility with the seed server")] = None,
    start_frame: StartFrameQuery = None,
) -> Response:
    started = time.monotonic()
    return await generate(rt, started, "text", text=text, voice=voice, avatar=avatar,
                          fmt=format, session_id=session_id, realtime=realtime,
                          start_frame=start_frame)


@router.post("/generate", summary="Speak text (JSON body): a stream of frames",
             responses=STREAM_RESPONSES)
async def generate_post(
    rt: Runtime,
    body: GenerateBody,
    format: FormatQuery = "mjpeg",
    session_id: SessionQuery = None,
    realtime: RealtimeQuery = True,
    duration: Annotated[float | None, Query(description="Ignored (seed compatibility)")] = None,
    start_frame: StartFrameQuery = None,
) -> Response:
    started = time.monotonic()
    return await generate(rt, started, "text", text=body.text, voice=body.voice,
                          avatar=body.avatar, fmt=format, session_id=session_id,
                          realtime=realtime, start_frame=start_frame)


@router.post("/generate-from-audio",
             summary="Animate uploaded audio: a stream of frames",
             description=f"Multipart form with the file in field `{FIELD}` (or a raw `audio/*` "
                         "body). WAV 16 kHz 16-bit mono is recommended; any format FFmpeg "
                         "decodes is accepted and resampled. 413 past "
                         "`services.max_upload_bytes` bytes or `services.max_upload_seconds` "
                         "seconds; 415 for a body that is not audio; 422 for undecodable audio.",
             responses=STREAM_RESPONSES,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {
                     "type": "object", "required": [FIELD],
                     "properties": {FIELD: {"type": "string", "format": "binary"}}}},
                 "audio/*": {"schema": {"type": "string", "format": "binary"}}}}})
async def generate_from_audio(
    request: HttpRequest,
    rt: Runtime,
    uploads: UploadReader,
    avatar: AvatarQuery = "",
    format: FormatQuery = "mjpeg",
    session_id: SessionQuery = None,
    realtime: RealtimeQuery = True,
    start_frame: StartFrameQuery = None,
) -> Response:
    started = time.monotonic()
    admission = rt.admit(session_id)  # before the body is read: over the cap, 503 at once
    try:
        await rt.avatar(avatar)
        pcm = await uploads.pcm(request)
        return await generate(rt, started, "audio", pcm=pcm, avatar=avatar, fmt=format,
                              admission=admission, realtime=realtime, start_frame=start_frame)
    except BaseException:
        await admission.close()
        raise


@router.get("/generate-from-audio", summary="The avatar's still frame as a one-part MJPEG "
            "stream (seed compatibility: its page pointed an <img> here)",
            responses={200: {"content": {mjpeg.MEDIA_TYPE: {}}}})
async def generate_from_audio_still(rt: Runtime, avatar: AvatarQuery = "") -> Response:
    meta = await rt.avatar(avatar)
    return Response(mjpeg.part(meta.still_jpeg), media_type=mjpeg.MEDIA_TYPE)
