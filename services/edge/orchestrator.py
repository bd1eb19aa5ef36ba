"""One utterance through the three services: (text ->) TTS -> AudioFeatures -> Renderer.

Every stage is a bidirectional gRPC stream opened once per utterance and driven by its own
task, so audio, features and frames flow concurrently and gRPC flow control carries
back-pressure from a slow consumer all the way up to TTS. The audio that goes downstream is
kept on a timeline; each rendered frame leaves joined with samples [640 i, 640 i + 640) of
it, so the pairing of picture and sound is exact by construction (frame i is rendered from
the feature window of frame i). `cancel()` cancels all three calls at once (client gone,
barge-in, explicit cancel); the first downstream failure cancels the others and is reported
with the name of the service at fault.

A watchdog bounds every wait on a stage: a stage that owes an answer (it has been sent work
and the edge is waiting to read) and stays silent for `stall_probe_s` has its health checked,
and two failed checks in a row (a stopped or wedged process) end the utterance UNAVAILABLE
naming it; a stage that is alive but silent past its deadline ends it DEADLINE_EXCEEDED
naming it. Time the edge itself spends blocked (a slow reader downstream of it) never counts
as a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from services.edge.clients import FEATURES, RENDERER, TTS, Downstream
from services.edge.errors import EdgeError, from_rpc
from services.edge.speech import speech_limit_error
from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2, tts_pb2
from synctalk.rpc.server import SESSION_METADATA_KEY

FRAME_BYTES = SAMPLES_PER_FRAME * 2
FEATURE_MODE_METADATA_KEY = "x-feature-mode"
CHUNK_SAMPLES = SAMPLE_RATE // 2  # uploads go downstream in 0.5 s chunks
OUT_QUEUE_FRAMES = 32  # frames buffered between the renderer stream and the consumer
# What grpc.aio reports, as an INTERNAL status, for a stream that broke under a write.
LOCAL_FAILURE_DETAILS = "Internal error from Core"
REAL_STATUS_WAIT_S = 0.3  # how long to wait for the real status to replace it
TAIL_MARGIN_S = 0.15  # pad live input this long before the player would run out of frames
STAGE_WATCH_S = 0.25  # how often the watchdog looks at the stages
# A stalled stage is declared wedged after this many failed health checks in a row, this far
# apart: one check that misses its 1 s deadline may be a busy machine, two are a hang.
STALL_CONFIRMATIONS = 2
STALL_PROBE_GAP_S = 0.5

log = get_logger("services.edge.orchestrator")


@dataclass(frozen=True)
class Frame:
    """A rendered frame with the audio that plays with it."""

    index: int
    pts_ms: int
    image: bytes
    encoding: int
    width: int
    height: int
    audio: bytes  # 640 samples, s16le, 16 kHz mono
    source_frame: int
    idle: bool
    render_latency_s: float  # feature frame sent to the renderer -> video frame back


@dataclass(frozen=True)
class UtteranceConfig:
    avatar: str
    feature_mode: str
    voice: str = ""
    encoding: int = common_pb2.IMAGE_ENCODING_JPEG
    jpeg_quality: int = 0
    start_frame: int = 0
    # Added to the renderer's frame numbers, so a session's frames count on across utterances.
    index_offset: int = 0
    # Live input (gRPC Animate): when input pauses this long, pad silence so the last frames
    # (held back by the feature look-ahead) come out instead of waiting for more audio.
    tail_flush_s: float | None = None
    lookahead_frames: int = 8
    stream_timeout_s: float = 660.0
    # Text input: speech past this many samples ends the utterance with a clear 422 (the
    # stream limit) rather than running into the renderer's frame cap ("busy").
    max_speech_samples: int | None = None
    # Stall deadlines (services.stall_probe_s, stage_timeout_s, first_frame_timeout_s).
    stall_probe_s: float = 1.0
    stage_timeout_s: float = 30.0
    first_frame_timeout_s: float = 60.0


class UtteranceInterrupted(Exception):
    """The utterance was cancelled (client gone, barge-in, explicit cancel)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _End:
    pass


_END = _End()


class PcmTimeline:
    """The utterance's audio as it went downstream; frame i plays samples [640 i, 640 i + 640)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._first_frame = 0
        self.samples = 0

    def append(self, pcm: bytes) -> None:
        self._buf += pcm
        self.samples += len(pcm) // 2

    def take(self, index: int) -> bytes:
        """The 1280 bytes of frame `index` (zero-padded past the end); earlier audio is dropped."""
        drop = index - self._first_frame
        if drop > 0:
            del self._buf[: drop * FRAME_BYTES]
            self._first_frame = index
        piece = bytes(self._buf[:FRAME_BYTES])
        return piece + b"\0" * (FRAME_BYTES - len(piece))


@dataclass
class _Stats:
    first_frame_at: float | None = None  # monotonic time the first frame came back
    frames: int = 0


class Utterance:
    """Drive one utterance; feed it with `send_text`/`send_audio`/`send_end`, read `frames()`."""

    def __init__(
        self,
        downstream: Downstream,
        config: UtteranceConfig,
        session_id: str,
        *,
        text_input: bool,
    ) -> None:
        self.downstream = downstream
        self.config = config
        self.session_id = session_id
        self.text_input = text_input
        self.timeline = PcmTimeline()
        self.stats = _Stats()
        self._out: asyncio.Queue[Frame | BaseException | _End] = asyncio.Queue(OUT_QUEUE_FRAMES)
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: dict[str, grpc.aio.StreamStreamCall] = {}
        self._feature_lock = asyncio.Lock()
        self._sent_at: dict[int, float] = {}
        self._failure: EdgeError | None = None
        self._interrupted: str | None = None
        self._finished = False
        self._input_ended = False
        self._last_input = time.monotonic()
        self._tail_due = False
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.queued_bytes = 0
        # Stall tracking per stage: since when it owes an answer, since when a pump waits in
        # its `read()`, whether it answered yet, whether the edge finished writing to it.
        self._owed_since: dict[str, float | None] = {}
        self._reading_since: dict[str, float | None] = {}
        self._answered: set[str] = set()
        self._writes_done: set[str] = set()
        self._first_audio_at: float | None = None

    # -- set-up ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the downstream streams and send their first messages."""
        cfg = self.config
        session = ((SESSION_METADATA_KEY, self.session_id),)
        timeout = cfg.stream_timeout_s
        self._calls[RENDERER] = self.downstream.renderer.Render(metadata=session, timeout=timeout)
        self._calls[FEATURES] = self.downstream.features.Extract(
            metadata=(*session, (FEATURE_MODE_METADATA_KEY, cfg.feature_mode)), timeout=timeout
        )
        if self.text_input:
            self._calls[TTS] = self.downstream.tts.Synthesize(metadata=session, timeout=timeout)
        render_config = renderer_pb2.RenderConfig(
            avatar=cfg.avatar,
            encoding=cfg.encoding,
            jpeg_quality=cfg.jpeg_quality,
            start_frame=cfg.start_frame,
        )
        await self._write(RENDERER, renderer_pb2.RenderRequest(config=render_config))
        if self.text_input:
            tts_config = tts_pb2.SynthesizeConfig(voice=cfg.voice, sample_rate=SAMPLE_RATE)
            await self._write(TTS, tts_pb2.SynthesizeRequest(config=tts_config))
            self._spawn(self._pump_tts())
        self._spawn(self._pump_input())
        self._spawn(self._pump_features())
        self._spawn(self._read_frames())
        if cfg.tail_flush_s is not None:
            self._spawn(self._watch_tail(cfg.tail_flush_s))
        self._spawn(self._watch_stages())

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    # -- input -------------------------------------------------------------------------
    #
    # Input is queued and fed downstream by a task of the utterance, so the caller never
    # blocks on flow control: it can still see (and act on) a cancel sent behind a burst of
    # audio. `queued_bytes` lets it bound the queue. Errors end `frames()`, never the caller.

    def send_text(self, piece: str | bytes) -> None:
        """Text for TTS; bytes may split multi-byte characters (TTS joins and validates).
        Never raises: text that is not valid Unicode goes as is and TTS refuses it
        (INVALID_ARGUMENT), which ends `frames()`."""
        data = piece.encode("utf-8", "surrogatepass") if isinstance(piece, str) else piece
        self._inbox.put_nowait(("text", data))

    def send_audio(self, pcm: bytes) -> None:
        """16 kHz mono s16le audio, any length."""
        if pcm:
            self.queued_bytes += len(pcm)
            self._inbox.put_nowait(("audio", pcm))

    def send_end(self) -> None:
        """No more input: the rest of the text is spoken and every remaining frame flushed."""
        if not self._input_ended:
            self._input_ended = True
            self._inbox.put_nowait(("end", None))

    def submit(self, *, text: str | None = None, pcm: bytes | None = None) -> None:
        """The whole input of a one-shot request, then its end."""
        if text is not None:
            self.send_text(text)
        if pcm is not None:
            self.send_audio(pcm)
        self.send_end()

    async def wait_queue_below(self, limit_bytes: int) -> None:
        while self.queued_bytes > limit_bytes and self.active:
            await asyncio.sleep(0.01)

    async def _pump_input(self) -> None:
        step = CHUNK_SAMPLES * 2
        with self._reporting():
            while True:
                kind, data = await self._inbox.get()
                self._last_input = time.monotonic()
                if kind == "end":
                    if self.text_input:
                        await self._done_writing(TTS)
                    else:
                        async with self._feature_lock:
                            await self._done_writing(FEATURES)
                    return
                if kind == "text":
                    await self._write(TTS, tts_pb2.SynthesizeRequest(text=data))
                    continue
                for offset in range(0, len(data), step):
                    await self._feed(data[offset : offset + step])
                self.queued_bytes -= len(data)

    @contextlib.contextmanager
    def _reporting(self):  # type: ignore[no-untyped-def]
        try:
            yield
        except EdgeError as err:
            if self._failure is None and self._interrupted is None:
                self._fail(err)

    @property
    def active(self) -> bool:
        return not (self._finished or self._failure or self._interrupted)

    async def _feed(self, pcm: bytes) -> None:
        """Append audio to the timeline and send it to AudioFeatures, in this order."""
        if not pcm:
            return
        async with self._feature_lock:
            if FEATURES in self._writes_done:  # the tail pad lost a race with the input's end
                return
            start = self.timeline.samples
            self.timeline.append(pcm)
            chunk = common_pb2.AudioChunk(pcm=pcm, sample_rate=SAMPLE_RATE, start_sample=start)
            self._owe(FEATURES)
            await self._write(FEATURES, chunk)
            if self._first_audio_at is None:
                self._first_audio_at = time.monotonic()
            self._tail_due = True

    # -- pumps -------------------------------------------------------------------------

    async def _pump_tts(self) -> None:
        try:
            while True:
                chunk = await self._read(TTS)
                if chunk is grpc.aio.EOF:
                    break
                if chunk.sample_rate not in (0, SAMPLE_RATE):
                    raise EdgeError(502, grpc.StatusCode.INTERNAL,
                                    f"tts sent {chunk.sample_rate} Hz audio, expected {SAMPLE_RATE}",
                                    service=TTS)
                self._last_input = time.monotonic()
                limit = self.config.max_speech_samples
                if limit is not None and self.timeline.samples + len(chunk.pcm) // 2 > limit:
                    raise speech_limit_error(limit / SAMPLE_RATE)
                await self._feed(bytes(chunk.pcm))
            async with self._feature_lock:
                await self._done_writing(FEATURES)
        except grpc.aio.AioRpcError as err:
            self._fail(await self._rpc_error(TTS, err))
        except EdgeError as err:
            self._fail(err)

    async def _pump_features(self) -> None:
        try:
            while True:
                frame = await self._read(FEATURES)
                if frame is grpc.aio.EOF:
                    break
                self._sent_at[frame.index] = time.monotonic()
                self._owe(RENDERER)
                await self._write(RENDERER, renderer_pb2.RenderRequest(frame=frame))
            await self._done_writing(RENDERER)
        except grpc.aio.AioRpcError as err:
            self._fail(await self._rpc_error(FEATURES, err))
        except EdgeError as err:
            self._fail(err)

    async def _read_frames(self) -> None:
        cfg = self.config
        expected = 0
        try:
            while True:
                video = await self._read(RENDERER)
                if video is grpc.aio.EOF:
                    break
                if video.index != expected:
                    raise EdgeError(502, grpc.StatusCode.INTERNAL,
                                    f"renderer sent frame {video.index}, expected {expected}",
                                    service=RENDERER)
                expected += 1
                now = time.monotonic()
                sent = self._sent_at.pop(video.index, now)
                if self.stats.first_frame_at is None:
                    self.stats.first_frame_at = now
                self.stats.frames += 1
                index = cfg.index_offset + video.index
                await self._out.put(Frame(
                    index=index,
                    pts_ms=40 * index,
                    image=bytes(video.data),
                    encoding=video.encoding,
                    width=video.width,
                    height=video.height,
                    audio=self.timeline.take(video.index),
                    source_frame=video.source_frame,
                    idle=video.idle,
                    render_latency_s=now - sent,
                ))
            self._finished = True
            await self._out.put(_END)
        except grpc.aio.AioRpcError as err:
            self._fail(await self._rpc_error(RENDERER, err))
        except EdgeError as err:
            self._fail(err)

    async def _watch_tail(self, quiet_s: float) -> None:
        """Pad silence when live input pauses and the player is about to run out of frames,
        so the frames the look-ahead holds back come out instead of waiting for more input.
        Input that arrives in time (the next sentence from TTS) gets no pause inserted."""
        pad_frames = self.config.lookahead_frames + 2
        while not self._input_ended:
            await asyncio.sleep(quiet_s / 4)
            now = time.monotonic()
            idle = (self._tail_due and self.queued_bytes == 0 and self._inbox.empty()
                    and now - self._last_input >= quiet_s)
            first = self.stats.first_frame_at
            starving = first is None or now - first >= self.stats.frames * 0.04 - TAIL_MARGIN_S
            if not (idle and starving):
                continue
            to_boundary = (-self.timeline.samples) % SAMPLES_PER_FRAME
            silence = b"\0" * 2 * (to_boundary + pad_frames * SAMPLES_PER_FRAME)
            with self._reporting():
                await self._feed(silence)
            self._tail_due = False

    # -- stall watchdog ----------------------------------------------------------------

    def _owe(self, service: str) -> None:
        """`service` was sent work (or its input was closed): an answer is now due."""
        if self._owed_since.get(service) is None:
            self._owed_since[service] = time.monotonic()

    async def _read(self, service: str) -> Any:
        """The next message of `service`'s stream, with the wait visible to the watchdog."""
        self._reading_since[service] = time.monotonic()
        try:
            message = await self._calls[service].read()
        finally:
            self._reading_since[service] = None
        self._answered.add(service)
        # The renderer still owes frames it was sent besides this one (popped by the caller).
        still_owed = message is not grpc.aio.EOF and (
            service in self._writes_done
            or (service == RENDERER and any(i != message.index for i in self._sent_at)))
        self._owed_since[service] = time.monotonic() if still_owed else None
        return message

    def _stalled_for(self, service: str, now: float) -> float:
        """How long `service` has owed an answer while the edge was waiting to read it."""
        owed, reading = self._owed_since.get(service), self._reading_since.get(service)
        if owed is None or reading is None:
            return 0.0
        return now - max(owed, reading)

    async def _watch_stages(self) -> None:
        """End the utterance when a stage is wedged (health fails) or silent past its deadline."""
        cfg = self.config
        next_probe: dict[str, float] = {}
        failed_probes: dict[str, int] = {}
        while self.active:
            await asyncio.sleep(STAGE_WATCH_S)
            now = time.monotonic()
            if (self.stats.first_frame_at is None and self._first_audio_at is not None
                    and now - self._first_audio_at > cfg.first_frame_timeout_s):
                service = max(self._calls, key=lambda name: self._stalled_for(name, now))
                self._fail(EdgeError(
                    504, grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no first frame within {cfg.first_frame_timeout_s:g} s "
                    f"(services.first_frame_timeout_s); {service} service is behind",
                    service=service))
                return
            for service in list(self._calls):
                stalled = self._stalled_for(service, now)
                limit = cfg.stage_timeout_s if service in self._answered \
                    else cfg.first_frame_timeout_s
                if stalled > limit:
                    self._fail(EdgeError(
                        504, grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"{service} service answered nothing for {stalled:.1f} s "
                        f"(limit {limit:g} s)", service=service))
                    return
                if stalled < cfg.stall_probe_s:
                    failed_probes[service] = 0
                    continue
                if now < next_probe.get(service, 0.0):
                    continue
                state = await self.downstream.health_of(service)
                next_probe[service] = time.monotonic() + STALL_PROBE_GAP_S
                if state == "ok" or self._stalled_for(service, time.monotonic()) == 0:
                    failed_probes[service] = 0
                    continue
                failed_probes[service] = failed_probes.get(service, 0) + 1
                if failed_probes[service] >= STALL_CONFIRMATIONS:
                    self._fail(EdgeError(
                        503, grpc.StatusCode.UNAVAILABLE,
                        f"{service} service unavailable: no answer for {stalled:.1f} s "
                        f"and its health check says {state}", service=service, retry_after_s=5))
                    return

    # -- output ------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames in order, each with its audio; raises EdgeError or UtteranceInterrupted."""
        while True:
            item = await self._out.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    @property
    def interrupted(self) -> str | None:
        return self._interrupted

    # -- teardown ----------------------------------------------------------------------

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel every downstream stream at once and end `frames()` with UtteranceInterrupted."""
        if self._finished or self._interrupted or self._failure:
            self._stop_all()
            return
        self._interrupted = reason
        self._stop_all()
        self._replace_output(UtteranceInterrupted(reason))
        log.info("utterance.cancelled", session_id=self.session_id, reason=reason,
                 frames=self.stats.frames)

    async def aclose(self) -> None:
        """Cancel what still runs and wait for the pump tasks to end."""
        self._stop_all()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _fail(self, error: EdgeError) -> None:
        if self._failure is None and not self._interrupted:
            self._failure = error
            log.info("utterance.failed", session_id=self.session_id, service=error.service,
                     code=error.code.name, reason=error.message)
            self._replace_output(error)
        self._stop_all()

    def _stop_all(self) -> None:
        for call in self._calls.values():
            call.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _replace_output(self, item: BaseException) -> None:
        while not self._out.empty():
            self._out.get_nowait()
        self._out.put_nowait(item)

    # -- call helpers ------------------------------------------------------------------

    async def _write(self, service: str, message: object) -> None:
        call = self._calls[service]
        try:
            await call.write(message)
        except grpc.aio.AioRpcError as err:
            raise await self._rpc_error(service, err) from None
        except asyncio.InvalidStateError:
            raise await self._status_error(service) from None

    async def _done_writing(self, service: str) -> None:
        call = self._calls[service]
        self._writes_done.add(service)
        self._owe(service)
        try:
            await call.done_writing()
        except grpc.aio.AioRpcError as err:
            raise await self._rpc_error(service, err) from None
        except asyncio.InvalidStateError:
            raise await self._status_error(service) from None

    async def _status_error(self, service: str) -> EdgeError:
        """Why a call that refused a write has ended."""
        if self._failure is not None:
            return self._failure
        call = self._calls[service]
        return await self._rpc_error(service, _Status(await call.code(), await call.details()))

    async def _rpc_error(self, service: str, err: grpc.RpcError) -> EdgeError:
        """The failure of the call to `service`, with its real status.

        When a stream breaks under a pending write (the service died), grpc.aio fails the
        write, and the read racing it, with INTERNAL "Internal error from Core" in place of
        the call's status (grpc/grpc#36066); the real one (UNAVAILABLE) replaces it moments
        later. Reported as is, a crashed renderer would read "renderer service failed
        (INTERNAL)" with a 502 instead of "renderer service unavailable" with a 503."""
        if err.code() != grpc.StatusCode.INTERNAL or err.details() != LOCAL_FAILURE_DETAILS:
            return from_rpc(service, err)
        call = self._calls[service]
        deadline = time.monotonic() + REAL_STATUS_WAIT_S
        while time.monotonic() < deadline:
            details = await call.details()
            if details != LOCAL_FAILURE_DETAILS:
                return from_rpc(service, _Status(await call.code(), details))
            await asyncio.sleep(0.01)
        return from_rpc(service, _Status(grpc.StatusCode.UNAVAILABLE, "the stream broke"))


class _Status(grpc.RpcError):
    """A finished call's status in the shape `from_rpc` reads."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details
