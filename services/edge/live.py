"""WebSocket `/live`: a browser's microphone drives the avatar in real time.

The client sends one JSON config (text), then its microphone as binary s16le mono chunks;
the edge answers with the messages of the sound stream (services/edge/stream_format.py, one
per binary WebSocket message), so the page plays text, files and live input with one
player. The audio goes through the orchestration Animate uses (EdgeRuntime.start/deliver:
one audio utterance, streaming resampler) as one session counted against the cap.

Latency is kept bounded rather than let grow: the edge knows when every input sample
arrived, so each frame carries its `input_sample` and edge lag; a frame that comes back from
the renderer more than `services.live_max_lag_s` after the look-ahead allows is dropped; and
once the renderer is behind by more than that (frames whose look-ahead is in but that have
not come back), the utterance is interrupted (its queued frames are never made) and the input
goes on in a fresh one, as a barge-in would. Both count as dropped frames, reported to the
client in every frame header. While the client pauses, the edge pads the look-ahead with
silence (as Animate's tail flush does) so the last frames of what was said come out.

Every refusal and failure ends the socket with a close code and a reason: 1003 wrong kind of
message, 1007 bad config or PCM, 1008 origin/token/limits/flooding/not reading, 1009 message
too big, 1011 a backend failed, 1013 session cap or rate limit (docs/api-reference.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.edge import stream_format
from services.edge.animate import _Resampler
from services.edge.clients import AvatarMeta
from services.edge.errors import EdgeError
from services.edge.orchestrator import Frame, Utterance, UtteranceInterrupted
from services.edge.runtime import EdgeRuntime, Request
from services.edge.sessions import Session
from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import common_pb2

PATH = "/live"
MAX_MESSAGE_BYTES = 64 * 1024  # uvicorn refuses a larger WebSocket message with 1009
MAX_CHUNK_S = 0.5  # one binary message holds at most this much audio (else 1009)
FLOOD_FACTOR = 2.0  # input may run this much faster than real time ...
FLOOD_BURST_S = 2.0  # ... beyond a burst of this many seconds (else 1008)
PAUSE_S = 0.3  # no input this long: pad the look-ahead with silence
SEND_QUEUE_FRAMES = 25  # frames waiting for a client that does not read (then 1008)
CLOSE_TIMEOUT_S = 1.0
REASON_BYTES = 123  # the WebSocket limit on a close reason

# Close codes (RFC 6455 section 7.4.1).
NORMAL, GOING_AWAY, UNSUPPORTED, INVALID, POLICY, TOO_BIG, INTERNAL, TRY_LATER = (
    1000, 1001, 1003, 1007, 1008, 1009, 1011, 1013)

log = get_logger("services.edge.live")
router = APIRouter()


class LiveConfig(BaseModel):
    """The first message (text, JSON)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field("config", pattern="^config$")
    sample_rate: int = Field(SAMPLE_RATE, ge=8000, le=192_000)
    avatar: str = Field("", max_length=64)
    jpeg_quality: int = Field(0, ge=0, le=100)
    token: str = Field("", max_length=256, description="API token (off loopback), for "
                       "clients that cannot set headers on a WebSocket (browsers)")


class LiveClose(Exception):
    """End the socket with `code` and `reason`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def close_for(err: EdgeError) -> LiveClose:
    """The close code of an edge error: the client's fault, busy, or a backend's failure."""
    if err.http_status in (503,) and err.service == "edge":
        return LiveClose(TRY_LATER, err.message)
    if 400 <= err.http_status < 500:
        return LiveClose(INVALID, err.message)
    return LiveClose(INTERNAL, err.message)


def origin_allowed(headers: dict[str, str], cors_origins: list[str]) -> bool:
    """No Origin (not a browser), the edge's own origin, or a configured CORS origin."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin in cors_origins or "*" in cors_origins:
        return True
    host = headers.get("host", "")
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


@dataclass
class _Segment:
    """A run of the utterance's timeline: input audio (from `input_start`) or padding."""

    start: int  # timeline sample
    length: int
    input_start: int | None
    arrived: float  # monotonic time its last sample arrived


class _Timeline:
    """Which input sample, arrived when, each timeline sample of the utterance holds."""

    def __init__(self) -> None:
        self.segments: deque[_Segment] = deque()
        self.samples = 0

    def add(self, length: int, input_start: int | None, arrived: float) -> None:
        if length:
            self.segments.append(_Segment(self.samples, length, input_start, arrived))
            self.samples += length

    def locate(self, sample: int) -> tuple[int | None, float]:
        """(input sample, arrival time) of timeline `sample`; earlier segments are forgotten."""
        while len(self.segments) > 1 and self.segments[0].start + self.segments[0].length <= sample:
            self.segments.popleft()
        if not self.segments:
            return None, time.monotonic()
        seg = self.segments[0]
        offset = min(max(sample - seg.start, 0), seg.length - 1)
        arrived = seg.arrived - (seg.length - 1 - offset) / SAMPLE_RATE
        return (None if seg.input_start is None else seg.input_start + offset), arrived


class _Run:
    """One utterance of the session, with its frames and its timeline."""

    def __init__(self, utterance: Utterance, frames: AsyncGenerator[Frame, None]) -> None:
        self.utterance = utterance
        self.frames = frames
        self.timeline = _Timeline()
        self.rendered = 0  # frames back from the renderer
        self.replaced = False

    @property
    def behind(self) -> int:
        """Frames the renderer could have made by now (their look-ahead is in) but has not."""
        ready = self.timeline.samples // SAMPLES_PER_FRAME - self.utterance.config.lookahead_frames
        return ready - self.rendered

    @property
    def unsent(self) -> int:
        return -(-self.timeline.samples // SAMPLES_PER_FRAME) - self.rendered


class LiveSession:
    """One connection: reads input, feeds the utterance, sends frames, drops stale ones."""

    def __init__(self, ws: WebSocket, rt: EdgeRuntime, session: Session, avatar: AvatarMeta,
                 config: LiveConfig) -> None:
        self.ws = ws
        self.rt = rt
        self.session = session
        self.avatar = avatar
        self.config = config
        self.resample = _Resampler(config.sample_rate)
        self.max_lag_s = rt.settings.services.live_max_lag_s
        self.budget_s = 0.0  # the lag beyond which a frame is dropped (set once started)
        self.run_: _Run | None = None
        self.runs: asyncio.Queue[_Run] = asyncio.Queue()
        self.received_s = 0.0  # client audio received, in seconds
        self.input_samples = 0  # client audio after resampling, in 16 kHz samples
        self.first_input: float | None = None
        self.last_input = time.monotonic()
        self.padded = True  # nothing to flush before the first input
        self.dropped_late = 0
        self.dropped_stale = 0
        self.restarts = 0
        self.sent = 0
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(SEND_QUEUE_FRAMES)

    @property
    def dropped(self) -> int:
        return self.dropped_late + self.dropped_stale

    async def _start_run(self) -> _Run:
        """A new utterance (the current one, if any, is interrupted: its frames not yet made
        are never made)."""
        old = self.run_
        if old is not None:
            old.replaced = True
        request = Request(input="audio", encoding=common_pb2.IMAGE_ENCODING_JPEG,
                          jpeg_quality=self.config.jpeg_quality, tail_flush_s=None)
        utterance = await self.rt.start(self.session, request, self.avatar)
        if old is not None:
            stale = max(0, old.unsent)
            self.dropped_stale += stale
            self.restarts += 1
            self.rt.metrics.live_dropped.labels("stale").inc(stale)
            log.info("live.restart", session_id=self.session.id, stale_frames=stale)
        frames = self.rt.deliver(self.session, utterance, "live", time.monotonic(), self.avatar)
        self.run_ = _Run(utterance, frames)
        self.runs.put_nowait(self.run_)
        return self.run_

    async def run(self) -> None:
        first = await self._start_run()
        config = first.utterance.config
        self.budget_s = (config.lookahead_frames + 1) * SAMPLES_PER_FRAME / SAMPLE_RATE \
            + self.max_lag_s
        await self.ws.send_bytes(stream_format.message({
            "type": "start", "session_id": self.session.id, "avatar": self.avatar.name,
            "width": self.avatar.width, "height": self.avatar.height, "fps": 25,
            "sample_rate": SAMPLE_RATE, "samples_per_frame": SAMPLES_PER_FRAME,
            "lookahead_ms": 40 * config.lookahead_frames, "live": True,
            "max_lag_ms": round(self.max_lag_s * 1000)}))
        svc = self.rt.settings.services
        tasks = [asyncio.ensure_future(c) for c in (
            self._read(svc.idle_timeout_s), self._pump(), self._write(), self._pad())]
        try:
            done, _ = await asyncio.wait(tasks, timeout=svc.max_call_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise LiveClose(POLICY, f"the session reached services.max_call_s "
                                        f"({svc.max_call_s:g} s)")
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.run_ is not None:
                await self.run_.frames.aclose()

    # -- input -------------------------------------------------------------------------

    async def _read(self, idle_timeout_s: float) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), idle_timeout_s)
            except TimeoutError:
                raise LiveClose(POLICY, f"no input for services.idle_timeout_s "
                                        f"({idle_timeout_s:g} s)") from None
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                raise LiveClose(UNSUPPORTED, "after the config only binary PCM is accepted")
            await self._accept(data)

    async def _accept(self, data: bytes) -> None:
        if len(data) % 2:
            raise LiveClose(INVALID, f"odd byte count {len(data)}: PCM is 16-bit")
        rate = self.config.sample_rate
        seconds = len(data) / 2 / rate
        if seconds > MAX_CHUNK_S:
            raise LiveClose(TOO_BIG, f"a message holds {seconds:.2f} s of audio, the limit "
                                     f"is {MAX_CHUNK_S:g} s")
        if not data:
            return
        now = time.monotonic()
        if self.first_input is None:
            self.first_input = now
        self.received_s += seconds
        if self.received_s > FLOOD_FACTOR * (now - self.first_input) + FLOOD_BURST_S:
            raise LiveClose(POLICY, f"input faster than real time: {self.received_s:.1f} s of "
                                    f"audio in {now - self.first_input:.1f} s")
        pcm = self.resample(data)
        n = len(pcm) // 2
        start = self.input_samples
        self.input_samples += n
        self.last_input, self.padded = now, False
        run = self.run_
        assert run is not None
        if run.behind * SAMPLES_PER_FRAME / SAMPLE_RATE > self.max_lag_s:
            # The renderer fell behind: what it still has to make would come too late, so
            # the utterance is dropped and the input goes on in a fresh one.
            run = await self._start_run()
        run.timeline.add(n, start, now)
        run.utterance.send_audio(pcm)

    async def _pad(self) -> None:
        """Silence after a pause, up to a frame boundary plus the look-ahead and two frames,
        so the frames the look-ahead holds back come out (Animate's tail flush)."""
        while True:
            await asyncio.sleep(PAUSE_S / 4)
            now = time.monotonic()
            run = self.run_
            if run is None or self.padded or now - self.last_input < PAUSE_S:
                continue
            frames = run.utterance.config.lookahead_frames + 2
            length = (-run.timeline.samples) % SAMPLES_PER_FRAME + frames * SAMPLES_PER_FRAME
            run.timeline.add(length, None, now)
            run.utterance.send_audio(b"\0" * 2 * length)
            self.padded = True

    # -- output ------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Frames as the renderer makes them, utterance after utterance; late ones are
        dropped, the rest queued for the writer."""
        while True:
            run = await self.runs.get()
            offset = run.utterance.config.index_offset
            try:
                async for frame in run.frames:
                    start = (frame.index - offset) * SAMPLES_PER_FRAME
                    run.rendered = frame.index - offset + 1
                    input_sample, arrived = run.timeline.locate(start)
                    lag = time.monotonic() - arrived
                    if lag > self.budget_s:
                        self.dropped_late += 1
                        self.rt.metrics.live_dropped.labels("late").inc()
                        continue
                    self._queue(frame, input_sample, lag)
            except UtteranceInterrupted as err:
                if err.reason == "interrupted" and run.replaced:
                    continue  # replaced by a fresh utterance
                code = GOING_AWAY if err.reason == "shutdown" else NORMAL
                raise LiveClose(code, f"stopped ({err.reason})") from None
            except EdgeError as err:
                raise close_for(err) from None
            finally:
                await run.frames.aclose()
            raise LiveClose(NORMAL, "the stream ended")

    def _queue(self, frame: Frame, input_sample: int | None, lag: float) -> None:
        message = stream_format.frame_message(frame, {
            "input_sample": input_sample, "lag_ms": round(lag * 1000, 1),
            "dropped": self.dropped})
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            raise LiveClose(POLICY, f"the client is not reading: {SEND_QUEUE_FRAMES} frames "
                                    "waiting") from None

    async def _write(self) -> None:
        while True:
            message = await self.outbox.get()
            await self.ws.send_bytes(message)
            self.sent += 1

async def _first_config(ws: WebSocket, timeout_s: float) -> LiveConfig:
    try:
        message = await asyncio.wait_for(ws.receive(), timeout_s)
    except TimeoutError:
        raise LiveClose(POLICY, f"no config within {timeout_s:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise LiveClose(NORMAL, "closed before the config")
    text = message.get("text")
    if text is None:
        raise LiveClose(UNSUPPORTED, "the first message must be the JSON config (text)")
    try:
        return LiveConfig.model_validate(json.loads(text))
    except (ValueError, ValidationError) as err:
        detail = err.errors()[0] if isinstance(err, ValidationError) else None
        where = ".".join(str(p) for p in detail["loc"]) if detail else "config"
        why = detail["msg"] if detail else "not a JSON object"
        raise LiveClose(INVALID, f"config.{where}: {why}" if detail else
                        f"config: {why}") from None


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    reason = reason.encode()[:REASON_BYTES].decode(errors="ignore")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT_S)


@router.websocket(PATH)
async def live(ws: WebSocket) -> None:
    """One live session per connection (see the module docstring and docs/live-microphone.md)."""
    rt: EdgeRuntime = ws.app.state.runtime
    svc = rt.settings.services
    headers = {k.lower(): v for k, v in ws.headers.items()}
    client = ws.client.host if ws.client else ""
    await ws.accept()
    session: Session | None = None
    live_session: LiveSession | None = None
    code, reason = NORMAL, "done"
    try:
        if not origin_allowed(headers, svc.cors_origins):
            raise LiveClose(POLICY, f"origin {headers.get('origin')!r} is not allowed "
                                    "(services.cors_origins)")
        config = await _first_config(ws, min(svc.idle_timeout_s, 30.0))
        policy = getattr(ws.app.state, "access", None)
        if policy is not None:
            if config.token and "authorization" not in headers and "x-api-token" not in headers:
                headers["x-api-token"] = config.token
            denied = policy.check(headers, client, kind="live")
            if denied is not None:
                raise LiveClose(TRY_LATER if denied.http_status == 429 else POLICY,
                                denied.reason)
        avatar = await rt.avatar(config.avatar)
        session = rt.sessions.open_stream()
        rt.metrics.active_sessions.set(rt.sessions.active)
        log.info("live.start", session_id=session.id, avatar=avatar.name,
                 sample_rate=config.sample_rate, client=client)
        live_session = LiveSession(ws, rt, session, avatar, config)
        await live_session.run()
    except LiveClose as close:
        code, reason = close.code, close.reason
    except EdgeError as err:
        close = close_for(err)
        code, reason = close.code, close.reason
    except WebSocketDisconnect:
        code, reason = NORMAL, "the client went away"
    except Exception as err:  # a bug: logged with its traceback, the client gets 1011
        log.exception("live.error", error=repr(err))
        code, reason = INTERNAL, "internal error"
    finally:
        if session is not None:
            rt.sessions.close_stream(session)
            rt.metrics.active_sessions.set(rt.sessions.active)
            log.info("live.end", session_id=session.id, code=code, reason=reason,
                     sent=live_session.sent if live_session else 0,
                     dropped=live_session.dropped if live_session else 0)
    await _close(ws, code, reason)
