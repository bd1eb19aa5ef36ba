"""A generation request's stream: admit, wait for the first frame, then pace the rest out
as MJPEG or as the sound stream.

A stream must produce its first frame before the response starts, so failures up to then get
their proper status code; later failures end the stream (the sound stream says why in its
"end" message)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from services.edge import mjpeg, stream_format
from services.edge.clients import AvatarMeta
from services.edge.errors import EdgeError
from services.edge.orchestrator import Frame, UtteranceInterrupted
from services.edge.routes.deps import Format
from services.edge.runtime import Admission, EdgeRuntime, Request
from services.edge.sessions import Session
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.log import get_logger

AV_LEAD_S = 1.0  # the sound stream runs at most this far ahead of real time
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

log = get_logger("services.edge.http")


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


async def generate(
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
    start_frame: int | None = None,
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
        utterance = await admitted.start(
            Request(input=kind, voice=voice_id, start_frame=start_frame), meta)
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


async def _mjpeg_body(rt: EdgeRuntime, still: bytes, first: Frame,
                      frames: AsyncGenerator[Frame, None], realtime: bool
                      ) -> AsyncIterator[bytes]:
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
