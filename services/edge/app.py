"""The edge's HTTP API (FastAPI) and web page.

Compatible with the seed server (same paths, `audio_file` form field, MJPEG with boundary
`frame`, `X-Audio-Duration`, the debug JSON), with its defects fixed: bad input gets a 4xx
with a message (never a 500 or a traceback), uploads are decoded and resampled, no temporary
file is left, and frames leave joined with their audio. A stream must produce its first
frame before the response starts, so failures up to then get their proper status code;
later failures end the stream (the sound stream says why in its "end" message).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import ipaddress
import time
import wave
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import grpc
from fastapi import FastAPI, Query
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from services.edge import mjpeg, stream_format
from services.edge.access import AccessPolicy
from services.edge.access_http import AccessMiddleware
from services.edge.clients import TTS, AvatarMeta
from services.edge.debug import debug_status
from services.edge.errors import EdgeError, from_rpc
from services.edge.live import router as live_router
from services.edge.orchestrator import Frame, UtteranceInterrupted
from services.edge.runtime import Admission, EdgeRuntime, Request
from services.edge.sessions import Session
from services.edge.uploads import FIELD, Uploads
from services.edge.validation import StrictJsonRoute, validation_error
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.config import Settings
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import tts_pb2

STATIC_DIR = Path(__file__).resolve().parent / "static"
AV_LEAD_S = 1.0  # the sound stream runs at most this far ahead of real time
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

log = get_logger("services.edge.http")

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


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a message, or FastAPI's list of validation errors."""

    detail: str | list[dict[str, Any]]
    service: str | None = Field(None, description="The downstream service at fault")


class GenerateBody(BaseModel):
    text: str = Field(description="What the avatar says")
    voice: str = Field("", max_length=128)
    avatar: str = Field("", max_length=64)


class DebugUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    save_frames: bool | None = None
    save_audio: bool | None = None


class PlayerStats(BaseModel):
    """Figures the page measured while playing a stream."""

    model_config = ConfigDict(extra="ignore")

    av_offset_ms: float | None = Field(None, ge=-10_000, le=10_000)
    fps: float | None = Field(None, ge=0, le=1000)
    dropped_frames: int | None = Field(None, ge=0, le=1_000_000)
    time_to_first_frame_ms: float | None = Field(None, ge=0, le=600_000)


class LiveStreamResponse(StreamingResponse):
    """A streamed body that stops as soon as the client goes away.

    Starlette's StreamingResponse only notices a disconnect when a write fails, which can
    be seconds later while upstream is quiet; here a second task waits for the disconnect
    and cancels the body at once, so every downstream stream is cancelled with it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(watch())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[union-attr]
            if self.background is not None:  # e.g. ends a session whose body never started
                await self.background()
        failure = results[0]
        if isinstance(failure, Exception) and not isinstance(failure, OSError):
            log.error("http.stream_failed", error=repr(failure), exc_info=failure)


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches only this machine ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        responses=_ERROR_RESPONSES,
    )
    app.state.runtime = rt
    app.router.route_class = StrictJsonRoute  # NaN, Infinity, lone surrogates: 422
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    uploads = Uploads(settings.services)
    if settings.services.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.services.cors_origins,
            allow_methods=["GET", "POST"], allow_headers=["Content-Type", "X-Debug-Token"],
            expose_headers=["X-Session-Id", "X-Audio-Duration", "Retry-After"],
        )
    app.state.access = AccessPolicy(settings.services, host)
    app.add_middleware(AccessMiddleware, policy=app.state.access)
    loopback = is_loopback(host)

    def debug_allowed(request: HttpRequest) -> None:
        """Refuse the debug endpoints unless config enables them, and off loopback unless
        the request carries the configured token."""
        if not rt.debug.endpoints:
            raise EdgeError(404, grpc.StatusCode.NOT_FOUND,
                            "the debug endpoints are off (set debug.endpoints = true)")
        token = rt.debug.token
        if not token and not loopback:
            raise EdgeError(403, grpc.StatusCode.PERMISSION_DENIED,
                            "the debug endpoints need debug.token on a non-loopback listener")
        sent = request.headers.get("x-debug-token", "")
        if token and not hmac.compare_digest(sent.encode(), token.encode()):
            raise EdgeError(403, grpc.StatusCode.PERMISSION_DENIED,
                            "debug settings need the X-Debug-Token header")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(live_router)  # WebSocket /live: the browser's microphone

    @app.exception_handler(EdgeError)
    async def edge_error(request: HttpRequest, err: EdgeError) -> JSONResponse:
        body: dict[str, Any] = {"detail": err.message}
        if err.service != "edge":
            body["service"] = err.service
        return JSONResponse(body, status_code=err.http_status, headers=err.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: HttpRequest, err: Exception) -> JSONResponse:
        log.exception("http.error", path=request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    # -- page and static -----------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # -- generation ----------------------------------------------------------------------

    @app.get("/generate", summary="Speak text: a stream of frames (MJPEG, or with sound)",
             responses=_STREAM_RESPONSES)
    async def generate_get(
        request: HttpRequest,
        text: Annotated[str, Query(description="What the avatar says")],
        voice: VoiceQuery = "",
        avatar: AvatarQuery = "",
        format: FormatQuery = "mjpeg",
        session_id: SessionQuery = None,
        realtime: RealtimeQuery = True,
        duration: Annotated[float | None, Query(
            description="Ignored; accepted for compatibility with the seed server")] = None,
    ) -> Response:
        started = time.monotonic()
        return await _generate(rt, started, "text", text=text, voice=voice, avatar=avatar,
                               fmt=format, session_id=session_id, realtime=realtime)

    @app.post("/generate", summary="Speak text (JSON body): a stream of frames",
              responses=_STREAM_RESPONSES)
    async def generate_post(
        body: GenerateBody,
        format: FormatQuery = "mjpeg",
        session_id: SessionQuery = None,
        realtime: RealtimeQuery = True,
        duration: Annotated[float | None, Query(description="Ignored (seed compatibility)")] = None,
    ) -> Response:
        started = time.monotonic()
        return await _generate(rt, started, "text", text=body.text, voice=body.voice,
                               avatar=body.avatar, fmt=format, session_id=session_id,
                               realtime=realtime)

    @app.post("/generate-from-audio",
              summary="Animate uploaded audio: a stream of frames",
              description=f"Multipart form with the file in field `{FIELD}` (or a raw `audio/*` "
                          "body). WAV 16 kHz 16-bit mono is recommended; any format FFmpeg "
                          "decodes is accepted and resampled. 413 past "
                          f"{settings.services.max_upload_bytes} bytes or "
                          f"{settings.services.max_upload_seconds:g} s; 415 for a body that is "
                          "not audio; 422 for undecodable audio.",
              responses=_STREAM_RESPONSES,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": [FIELD],
                      "properties": {FIELD: {"type": "string", "format": "binary"}}}},
                  "audio/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def generate_from_audio(
        request: HttpRequest,
        avatar: AvatarQuery = "",
        format: FormatQuery = "mjpeg",
        session_id: SessionQuery = None,
        realtime: RealtimeQuery = True,
    ) -> Response:
        started = time.monotonic()
        admission = rt.admit(session_id)  # before the body is read: over the cap, 503 at once
        try:
            await rt.avatar(avatar)
            pcm = await uploads.pcm(request)
            return await _generate(rt, started, "audio", pcm=pcm, avatar=avatar, fmt=format,
                                   admission=admission, realtime=realtime)
        except BaseException:
            await admission.close()
            raise

    @app.get("/generate-from-audio", summary="The avatar's still frame as a one-part MJPEG "
             "stream (seed compatibility: its page pointed an <img> here)",
             responses={200: {"content": {mjpeg.MEDIA_TYPE: {}}}})
    async def generate_from_audio_still(avatar: AvatarQuery = "") -> Response:
        meta = await rt.avatar(avatar)
        return Response(mjpeg.part(meta.still_jpeg), media_type=mjpeg.MEDIA_TYPE)

    @app.post("/sessions/{session_id}/cancel",
              summary="Stop the session's utterance in progress (barge-in)")
    async def cancel(session_id: str) -> dict[str, Any]:
        session = rt.sessions.get(session_id)
        return {"session_id": session.id, "cancelled": rt.sessions.cancel(session)}

    @app.post("/sessions/{session_id}/stats", status_code=204,
              summary="Figures measured by a player (feeds the player_* metrics)")
    async def player_stats(session_id: str, stats: PlayerStats) -> Response:
        rt.sessions.get(session_id)
        m = rt.metrics
        if stats.av_offset_ms is not None:
            m.player_av_offset.observe(stats.av_offset_ms / 1000)
        if stats.fps is not None:
            m.player_fps.observe(stats.fps)
        if stats.dropped_frames:
            m.player_dropped.inc(stats.dropped_frames)
        return Response(status_code=204)

    @app.get("/result/{session_id}.mp4", summary="The session's last completed utterance as mp4",
             responses={200: {"content": {"video/mp4": {}}}, 404: {"description": "none"}})
    async def result(session_id: str) -> Response:
        data = await rt.results.mp4(session_id)
        if data is None:
            raise EdgeError(404, grpc.StatusCode.NOT_FOUND,
                            f"no result for session {session_id!r} (not finished, or expired)")
        return Response(data, media_type="video/mp4", headers={
            "Content-Disposition": f'attachment; filename="synctalk-{session_id[:8]}.mp4"'})

    # -- avatars, voices, audio -----------------------------------------------------------

    @app.get("/avatar", summary="The avatar's still frame (JPEG)",
             responses={200: {"content": {"image/jpeg": {}}}})
    async def avatar_still(avatar: AvatarQuery = "") -> Response:
        meta = await rt.avatar(avatar)
        return Response(meta.still_jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=60", "X-Avatar": meta.name})

    @app.get("/avatars", summary="Avatars the renderer serves")
    async def avatars() -> dict[str, Any]:
        listed = await rt.downstream.avatar_list()
        return {
            "default": await rt.downstream.resolve_avatar_name(""),
            "avatars": [{"name": a.name, "width": a.width, "height": a.height,
                         "num_frames": a.num_frames, "fps": a.fps,
                         "feature_modes": list(a.feature_modes)} for a in listed],
        }

    @app.get("/voices", summary="TTS voices")
    async def voices() -> dict[str, Any]:
        listed = await rt.downstream.voices()
        return {"voices": [{"id": v.id, "engine": v.engine, "language": v.language,
                            "default": v.is_default} for v in listed]}

    @app.get("/get-tts-audio", summary="Text to speech as a WAV download (16 kHz mono 16-bit)",
             responses={200: {"content": {"audio/wav": {}},
                              "headers": {"X-Audio-Duration": {"description": "seconds"}}}})
    async def tts_audio(
        text: Annotated[str, Query(description="What to say")],
        voice: VoiceQuery = "",
    ) -> Response:
        text = rt.check_text(text)
        voice_id = await rt.check_voice(voice)
        requests = [
            tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig(
                voice=voice_id, sample_rate=SAMPLE_RATE)),
            tts_pb2.SynthesizeRequest(text=text.encode("utf-8")),
        ]
        try:
            call = rt.downstream.tts.Synthesize(iter(requests), timeout=120)
            pcm = b"".join([chunk.pcm async for chunk in call])
        except grpc.aio.AioRpcError as err:
            raise from_rpc(TTS, err) from None
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(pcm)
        duration = len(pcm) / 2 / SAMPLE_RATE
        return Response(out.getvalue(), media_type="audio/wav", headers={
            "X-Audio-Duration": f"{duration:.3f}",
            "Content-Disposition": 'attachment; filename="tts_audio.wav"'})

    # -- health, debug, metrics -----------------------------------------------------------

    @app.get("/health", summary="This edge and each downstream service's gRPC health")
    async def health() -> dict[str, Any]:
        services = {"edge": "ok", **await rt.downstream.health()}
        status = "ok" if all(v == "ok" for v in services.values()) else "degraded"
        return {"status": status, "services": services, "active_sessions": rt.sessions.active,
                "max_sessions": rt.sessions.max_active}

    @app.get("/debug/status", summary="Debug dump settings", responses=_DEBUG_RESPONSES)
    async def debug_get(request: HttpRequest) -> dict[str, object]:
        debug_allowed(request)
        return debug_status(rt.debug)

    @app.post("/debug/config", summary="Change the debug dump settings (omitted fields stay)",
              responses=_DEBUG_RESPONSES)
    async def debug_set(
        update: DebugUpdate,
        request: HttpRequest,
    ) -> dict[str, object]:
        debug_allowed(request)
        changes = update.model_dump(exclude_none=True)
        rt.debug = rt.debug.model_copy(update=changes)
        if rt.debug.enabled:
            if rt.debug.save_frames:
                Path(rt.debug.frames_dir).mkdir(parents=True, exist_ok=True)
            if rt.debug.save_audio:
                Path(rt.debug.audio_dir).mkdir(parents=True, exist_ok=True)
        log.info("debug.config", **debug_status(rt.debug))
        return debug_status(rt.debug)

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        rt.metrics.active_sessions.set(rt.sessions.active)
        return Response(rt.metrics.render(), media_type=rt.metrics.content_type)

    return app


# Documented on every operation (schemathesis checks responses against the schema): the
# edge's own errors are {"detail": message}, FastAPI's validation errors a list.
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a body that cannot be parsed"},
    404: {"model": ErrorBody, "description": "unknown avatar, voice or session"},
    422: {"model": ErrorBody, "description": "bad input"},
    503: {"model": ErrorBody, "description": "a downstream service is down or busy"},
}

_DEBUG_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "a token is configured (or the edge is not on loopback) and the "
                         "X-Debug-Token header does not match"},
    404: {"description": "the debug endpoints are off (debug.endpoints = false, the default)"},
}

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
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


async def _generate(
    rt: EdgeRuntime,
    started: float,
    kind: str,
    *,
    text: str | None = None,
    pcm: bytes | None = None,
    voice: str = "",
    avatar: str = "",
    fmt: Format = "mjpeg",
    session_id: str | None = None,
    realtime: bool = True,
    admission: Admission | None = None,
) -> Response:
    """Validate, admit (unless the caller did), start the utterance, wait for its first
    frame, then stream the rest. The admission is closed on every path: here on a failure,
    by the response when the stream ends or never starts."""
    if text is not None:
        text = rt.check_text(text)
    admitted = admission or rt.admit(session_id)
    session = admitted.session
    try:
        meta = await rt.avatar(avatar)
        voice_id = await rt.check_voice(voice) if text is not None else ""
        utterance = await admitted.start(Request(input=kind, voice=voice_id), meta)
        utterance.submit(text=text, pcm=pcm)
        frames = rt.deliver(session, utterance, kind, started, meta)
        try:
            first = await anext(frames)
        except StopAsyncIteration:
            raise EdgeError(422, grpc.StatusCode.INVALID_ARGUMENT, "no audio to animate") from None
        except UtteranceInterrupted as err:
            raise EdgeError(409, grpc.StatusCode.ABORTED,
                            f"interrupted before the first frame ({err.reason})") from None
        headers = {**STREAM_HEADERS, "X-Session-Id": session.id}
        if fmt == "av":
            body = _av_body(rt, session, meta, first, frames, realtime,
                            utterance.config.lookahead_frames)
            media_type = stream_format.MEDIA_TYPE
        else:
            body = _mjpeg_body(rt, meta.still_jpeg, first, frames, realtime)
            media_type = mjpeg.MEDIA_TYPE
        return LiveStreamResponse(_closing(body, admitted), media_type=media_type,
                                  headers=headers, background=BackgroundTask(admitted.close))
    except BaseException:
        await admitted.close()
        raise


async def _closing(body: AsyncGenerator[bytes, None], admission: Admission
                   ) -> AsyncIterator[bytes]:
    """`body`, then the request's admission closed however the stream ends."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        try:
            await body.aclose()
        finally:
            await admission.close()


class _Pacer:
    """Holds frames back so none leaves more than `lead_s` before its presentation time
    (counted from the first frame): bounded buffering at the client, and an interrupted
    utterance has little left in flight."""

    def __init__(self, rt: EdgeRuntime, first: Frame, lead_s: float | None) -> None:
        self.rt = rt
        self.lead_s = lead_s
        self.t0 = time.monotonic()
        self.pts0 = first.pts_ms

    async def wait(self, frame: Frame) -> None:
        if self.lead_s is None:
            return
        due = self.t0 + (frame.pts_ms - self.pts0) / 1000
        lag = time.monotonic() - due
        if lag < -self.lead_s:
            await asyncio.sleep(-lag - self.lead_s)
        elif lag > 0:
            self.rt.metrics.stream_lag.observe(lag)


async def _mjpeg_body(rt: EdgeRuntime, still: bytes, first: Frame, frames: AsyncGenerator[Frame, None],
                      realtime: bool) -> AsyncIterator[bytes]:
    """The still frame (as the seed sent first), then every frame, paced to 25 frames/s."""
    try:
        if still:
            yield mjpeg.part(still)
        pacer = _Pacer(rt, first, 0.0 if realtime else None)
        yield mjpeg.part(first.image)
        async for frame in frames:
            await pacer.wait(frame)
            yield mjpeg.part(frame.image)
    except (UtteranceInterrupted, EdgeError) as err:
        log.info("mjpeg.ended_early", reason=str(err))
    finally:
        await frames.aclose()


async def _av_body(rt: EdgeRuntime, session: Session, meta: AvatarMeta, first: Frame,
                   frames: AsyncGenerator[Frame, None], realtime: bool, lookahead: int
                   ) -> AsyncIterator[bytes]:
    """start, every frame with its audio, end (with the result URL or what went wrong)."""
    count = 0
    end: dict[str, Any]
    try:
        yield stream_format.message({
            "type": "start", "session_id": session.id, "avatar": meta.name,
            "width": first.width or meta.width, "height": first.height or meta.height,
            "fps": 25, "sample_rate": SAMPLE_RATE, "samples_per_frame": 640,
            "lookahead_ms": 40 * lookahead,
        })
        pacer = _Pacer(rt, first, AV_LEAD_S if realtime else None)
        yield stream_format.frame_message(first)
        count = 1
        async for frame in frames:
            await pacer.wait(frame)
            yield stream_format.frame_message(frame)
            count += 1
        end = {"status": "complete", "result_url": session.last_result}
    except UtteranceInterrupted as err:
        status = "cancelled" if err.reason == "cancelled" else "interrupted"
        end = {"status": status, "reason": err.reason, "result_url": None}
    except EdgeError as err:
        end = {"status": "error", "error": err.message, "http_status": err.http_status,
               "service": err.service, "result_url": None}
    finally:
        await frames.aclose()
    yield stream_format.message({"type": "end", "frames": count, **end})
