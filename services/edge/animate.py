"""lipsync.v1.Avatar.Animate: a client streams audio (or text) and gets frames with their audio.

One call is one session. Input is read by its own task, so `cancel` takes effect while frames
are flowing out. Audio and text pieces continue the utterance in progress; a piece of the
other kind starts a new utterance that interrupts it, and `cancel` stops it (barge-in: the
three downstream streams are cancelled and the frames not yet sent are dropped). Frame
indices and pts count on across the utterances of a call. While input pauses, the edge pads
silence after the look-ahead so the last frames of what was said come out without waiting
for more input (`UtteranceConfig.tail_flush_s`). With `idle_between_utterances` the call sends
the avatar's idle loop whenever nothing is said (services/edge/animate_idle.py).

A call is bounded twice: the client must send something at least every
`services.idle_timeout_s` (a push-to-talk pause fits), and the call ends after
`services.max_call_s` however busy; both end it DEADLINE_EXCEEDED with a message naming the
limit, so an abandoned call never holds a session slot. Off loopback a call needs the API
token, and every call spends the caller's rate-limit token (`services.edge.access`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import soxr

from services.edge.access import AccessPolicy
from services.edge.animate_idle import IDLE_AFTER_S, feed_idle
from services.edge.clients import AvatarMeta
from services.edge.errors import EdgeError, bad_input
from services.edge.orchestrator import Frame, Utterance, UtteranceInterrupted
from services.edge.runtime import EdgeRuntime, Request
from services.edge.sessions import Session
from synctalk.audio.pcm import SAMPLE_RATE, float_to_s16le, s16le_to_float
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2

TAIL_FLUSH_S = 0.3
MAX_QUEUED_BYTES = 10 * 32_000  # 10 s of 16 kHz audio waiting for the pipeline
MAX_JPEG_QUALITY = 100

log = get_logger("services.edge.animate")


class _Resampler:
    """Streaming resampler of one call's audio to 16 kHz (state carried across chunks)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ") \
            if rate != SAMPLE_RATE else None

    def __call__(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        out = self._stream.resample_chunk(s16le_to_float(pcm), last=last)
        return float_to_s16le(np.asarray(out, np.float32))


AFTER_PAUSE = "ended after a pause"  # frames already made still go out


def dropped(utterance: Utterance | None) -> bool:
    """Whether queued frames of `utterance` are dropped (it was interrupted or cancelled)."""
    return utterance is not None and utterance.interrupted not in (None, AFTER_PAUSE)


class _Call:
    """State of one Animate call."""

    def __init__(self, rt: EdgeRuntime, session: Session, avatar: AvatarMeta,
                 config: avatar_pb2.AnimateConfig, voice: str, rate: int) -> None:
        self.rt = rt
        self.session = session
        self.avatar = avatar
        self.config = config
        self.voice = voice
        self.resample = _Resampler(rate)
        self.out: asyncio.Queue[tuple[Utterance | None, Frame] | BaseException | None] = \
            asyncio.Queue(64)
        self.current: Utterance | None = None
        self.kind: str | None = None
        self.forwarders: list[asyncio.Task[None]] = []
        # Idling between utterances (services/edge/animate_idle.py).
        self.starting = False  # an utterance is being opened
        self.input_ended = False  # the current utterance's input was ended after a pause
        self.closed = False  # the call's input has ended
        self.last_activity = time.monotonic()  # the last input or frame
        self.idler: asyncio.Task[None] | None = None
        if config.idle_between_utterances:
            encoding = config.encoding or common_pb2.IMAGE_ENCODING_JPEG
            self.idler = asyncio.ensure_future(feed_idle(self, encoding))

    @property
    def quiet(self) -> bool:
        """No utterance is starting, running or delivering, and input is still open."""
        return (not self.starting and not self.closed
                and (self.current is None or not self.current.active)
                and all(task.done() for task in self.forwarders))

    def end_paused_input(self, now: float) -> None:
        """End the current utterance's input once nothing came in or went out for a while."""
        if (self.current is not None and self.current.active and not self.input_ended
                and now - self.last_activity > IDLE_AFTER_S):
            self.finish()
            self.input_ended = True

    def stop_idling(self) -> None:
        self.closed = True
        if self.idler is not None:
            self.idler.cancel()

    async def start_utterance(self, kind: str) -> Utterance:
        encoding = self.config.encoding or common_pb2.IMAGE_ENCODING_JPEG
        request = Request(input=kind, voice=self.voice, encoding=encoding,
                          jpeg_quality=self.config.jpeg_quality, tail_flush_s=TAIL_FLUSH_S)
        self.starting = True
        try:
            utterance = await self.rt.start(self.session, request, self.avatar)
        finally:
            self.starting = False
        if kind == "audio":
            self.resample = _Resampler(self.resample.rate)  # nothing of earlier audio leaks in
        self.current, self.kind, self.input_ended = utterance, kind, False
        self.forwarders.append(asyncio.ensure_future(self._forward(utterance, kind)))
        return utterance

    async def _forward(self, utterance: Utterance, kind: str) -> None:
        frames = self.rt.deliver(self.session, utterance, kind, time.monotonic(), self.avatar)
        try:
            async for frame in frames:
                self.last_activity = time.monotonic()
                await self.out.put((utterance, frame))
        except UtteranceInterrupted:
            pass
        except EdgeError as err:
            await self.out.put(err)
        finally:
            await frames.aclose()

    def cancel_current(self, reason: str) -> None:
        if self.current is not None:
            self.current.cancel(reason)
        self.current, self.kind = None, None
        # Frames of the cancelled utterance that are queued but not sent are dropped.
        kept = []
        while not self.out.empty():
            item = self.out.get_nowait()
            if not (isinstance(item, tuple) and dropped(item[0])):
                kept.append(item)
        for item in kept:
            self.out.put_nowait(item)

    async def feed(self, request: avatar_pb2.AnimateRequest) -> None:
        kind = request.WhichOneof("payload")
        if kind == "config":
            raise bad_input("config: only the first message may be config")
        if kind == "cancel":
            self.cancel_current("cancelled")
            return
        if kind is None:
            raise bad_input("payload: empty message: set audio, text or cancel")
        if kind == "audio":
            chunk = request.audio
            if len(chunk.pcm) % 2:
                raise bad_input(f"audio.pcm: odd byte count {len(chunk.pcm)}")
            if chunk.sample_rate not in (0, self.resample.rate):
                raise bad_input(f"audio.sample_rate: {chunk.sample_rate} differs from "
                                f"config.sample_rate {self.resample.rate}")
        self.last_activity = time.monotonic()
        if (self.current is None or self.kind != kind or not self.current.active
                or self.input_ended):
            if self.current is not None and self.current.active:
                if self.input_ended:
                    # Ended after a pause: only silence was left to make; what is queued goes.
                    self.current.cancel(AFTER_PAUSE)
                else:
                    self.cancel_current("interrupted")  # barge-in
            await self.start_utterance(kind)
        assert self.current is not None
        if kind == "audio":
            self.current.send_audio(self.resample(bytes(request.audio.pcm)))
            # A client sending faster than the pipeline runs is held back here, once a few
            # seconds are queued; a live client never is, so its `cancel` acts at once.
            await self.current.wait_queue_below(MAX_QUEUED_BYTES)
        else:
            self.current.send_text(bytes(request.text))  # TTS validates UTF-8 across pieces

    def finish(self) -> None:
        if self.current is not None and self.current.active and not self.input_ended:
            if self.kind == "audio":
                self.current.send_audio(self.resample(b"", last=True))
            self.current.send_end()


def idle_timeout(seconds: float) -> EdgeError:
    return EdgeError(504, grpc.StatusCode.DEADLINE_EXCEEDED,
                     f"no message for {seconds:g} s: the call was idle too long "
                     "(services.idle_timeout_s)")


def call_too_long(seconds: float) -> EdgeError:
    return EdgeError(504, grpc.StatusCode.DEADLINE_EXCEEDED,
                     f"the call reached its maximum lifetime of {seconds:g} s "
                     "(services.max_call_s)")


def peer_host(peer: str) -> str:
    """The address in a gRPC peer string ("ipv4:127.0.0.1:5000" -> "127.0.0.1")."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    return rest or peer


class AvatarServicer(avatar_pb2_grpc.AvatarServicer):
    def __init__(self, runtime: EdgeRuntime, access: AccessPolicy | None = None) -> None:
        self.rt = runtime
        self.access = access

    async def Animate(
        self,
        request_iterator: AsyncIterator[avatar_pb2.AnimateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[avatar_pb2.AnimatedFrame]:
        rt = self.rt
        services = rt.settings.services
        session: Session | None = None
        reader: asyncio.Task[None] | None = None
        call: _Call | None = None
        ends_at = time.monotonic() + services.max_call_s
        try:
            if self.access is not None:
                metadata = {k: v for k, v in context.invocation_metadata() or ()
                            if isinstance(v, str)}
                denied = self.access.check(metadata, peer_host(context.peer()), kind="animate")
                if denied is not None:
                    log.warning("animate.denied", reason=denied.reason)
                    raise EdgeError(denied.http_status, denied.grpc_code, denied.reason)
            requests = aiter(request_iterator)
            try:
                first = await asyncio.wait_for(anext(requests, None), services.idle_timeout_s)
            except TimeoutError:
                raise idle_timeout(services.idle_timeout_s) from None
            if first is None or first.WhichOneof("payload") != "config":
                raise bad_input("config: the first message must be config")
            config = first.config
            if not 0 <= config.jpeg_quality <= MAX_JPEG_QUALITY:
                raise bad_input(f"config.jpeg_quality: expected 0..100, got {config.jpeg_quality}")
            rate = config.sample_rate or SAMPLE_RATE
            if not 8000 <= rate <= 192_000:
                raise bad_input(f"config.sample_rate: expected 8000..192000, got {rate}")
            avatar = await rt.avatar(config.avatar)
            voice = await rt.check_voice(config.voice) if config.voice else ""
            session = rt.sessions.open_stream()
            rt.metrics.active_sessions.set(rt.sessions.active)
            log.info("animate.start", session_id=session.id, avatar=avatar.name)
            call = _Call(rt, session, avatar, config, voice, rate)
            reader = asyncio.ensure_future(self._read(requests, call, services.idle_timeout_s))
            async for message in self._frames(call, ends_at, services.max_call_s):
                yield message
        except EdgeError as err:
            await context.abort(err.code, err.message)
        finally:
            try:
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
                if call is not None:
                    call.stop_idling()
                    call.cancel_current("stream closed")
                    tasks = [*call.forwarders, *([call.idler] if call.idler else [])]
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                if session is not None:
                    rt.sessions.close_stream(session)
                    rt.metrics.active_sessions.set(rt.sessions.active)

    async def _read(self, requests: AsyncIterator[avatar_pb2.AnimateRequest], call: _Call,
                    idle_s: float) -> None:
        """Feed every request, then wait for the utterances to deliver and mark the end."""
        try:
            while True:
                try:
                    request = await asyncio.wait_for(anext(requests), idle_s)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    log.info("animate.idle_timeout", session_id=call.session.id, idle_s=idle_s)
                    raise idle_timeout(idle_s) from None
                await call.feed(request)
            call.stop_idling()
            call.finish()
        except EdgeError as err:
            call.stop_idling()
            call.cancel_current("bad input" if err.code != grpc.StatusCode.DEADLINE_EXCEEDED
                                else "idle")
            await call.out.put(err)
        await asyncio.gather(*call.forwarders, return_exceptions=True)
        await call.out.put(None)

    async def _frames(self, call: _Call, ends_at: float,
                      max_call_s: float) -> AsyncIterator[avatar_pb2.AnimatedFrame]:
        """Frames in order until input has ended and every utterance has delivered, or the
        call's lifetime is over."""
        while True:
            try:
                item = await asyncio.wait_for(call.out.get(), max(0.0, ends_at - time.monotonic()))
            except TimeoutError:
                log.info("animate.max_call", session_id=call.session.id, max_call_s=max_call_s)
                raise call_too_long(max_call_s) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            utterance, frame = item
            if dropped(utterance):
                continue
            yield avatar_pb2.AnimatedFrame(
                frame=common_pb2.VideoFrame(
                    index=frame.index, pts_ms=frame.pts_ms, encoding=frame.encoding,
                    data=frame.image, width=frame.width, height=frame.height,
                    source_frame=frame.source_frame, idle=frame.idle),
                audio=frame.audio,
                session_id=call.session.id,
            )
