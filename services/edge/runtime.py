"""What the HTTP API and the gRPC Avatar service share: downstream channels, sessions,
metrics, results, the live debug settings, and the loop that delivers an utterance.

A session's life on the edge has one owner per request. An HTTP request is admitted first
(`EdgeRuntime.admit`: a slot, before its body is read or anything is decoded) and its
`Admission.close` ends it, however it ends; an Animate call holds its slot from
`sessions.open_stream` to `sessions.close_stream`. Within either, `start` and `deliver` end
the utterance they own: every cleanup step runs guarded, in a fixed order, and the slot is
given back in a `finally` after them, so a failing step (a debug dump on a full disk, a
stream that will not close) can never keep a slot.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass

from services.edge.clients import AvatarMeta, Downstream
from services.edge.delivery import DeliveryRecord
from services.edge.errors import EdgeError, bad_input
from services.edge.idle_loops import IdleLoops
from services.edge.metrics import EdgeMetrics
from services.edge.orchestrator import Frame, Utterance, UtteranceConfig, UtteranceInterrupted
from services.edge.results import ResultStore
from services.edge.sessions import Lease, Session, SessionManager
from services.edge.speech import check_speech_length
from services.edge.validation import MAX_AVATAR_CHARS, MAX_VOICE_CHARS, check_name, check_unicode
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.config import Settings
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import common_pb2

STREAM_DEADLINE_MARGIN_S = 60.0

log = get_logger("services.edge")


def default_avatar(settings: Settings) -> str:
    return settings.services.default_avatar


@dataclass(frozen=True)
class Request:
    """One utterance as a client asked for it, after parsing."""

    input: str  # "text" or "audio"
    avatar: str = ""
    voice: str = ""
    encoding: int = common_pb2.IMAGE_ENCODING_JPEG
    jpeg_quality: int = 0
    tail_flush_s: float | None = None
    # Context rows each frame leaves out to come out sooner (live input; see
    # synctalk.audio.windows); the feature service may grant fewer.
    lookahead_trim: int = 0
    # Avatar source frame to start the walk at (the idle loop's `next_start`, so speech goes
    # on from the idle frame a player shows); None: where the session's last utterance left.
    start_frame: int | None = None


class EdgeRuntime:
    def __init__(self, settings: Settings, downstream: Downstream | None = None) -> None:
        self.settings = settings
        self.debug = settings.debug.model_copy()
        self.downstream = downstream or Downstream(
            settings.services, settings.server,
            default_avatar=default_avatar(settings),
            feature_mode=settings.models.feature_mode,
        )
        self.sessions = SessionManager(settings.services.max_sessions)
        self.metrics = EdgeMetrics()
        self.results = ResultStore()
        self.idle_loops = IdleLoops(self.downstream)

    async def close(self) -> None:
        self.sessions.cancel_all()
        await self.downstream.close()

    def check_text(self, text: str) -> str:
        if not text or not text.strip():
            raise bad_input("text: must not be empty")
        limit = self.settings.tts.max_text_chars
        if len(text) > limit:
            raise bad_input(f"text: {len(text)} characters, the limit is {limit}")
        check_unicode(text, "text")
        check_speech_length(text, self.settings.services.max_stream_seconds)
        return text

    async def avatar(self, name: str) -> AvatarMeta:
        return await self.downstream.avatar(check_name(name, "avatar", MAX_AVATAR_CHARS))

    async def check_voice(self, voice: str) -> str:
        meta = await self.downstream.voice(check_name(voice, "voice", MAX_VOICE_CHARS))
        if meta.engine == "espeak-ng":
            self.metrics.fallbacks.labels("tts_espeak").inc()
        return meta.id

    def admit(self, session_id: str | None = None) -> Admission:
        """A slot for an HTTP request on session `session_id` (barge-in) or a new session;
        404 for an unknown session, 503 with Retry-After when every slot is taken. Call it
        before reading the request's body; the caller must `close` what it returns."""
        if session_id:
            lease = self.sessions.admit(self.sessions.get(session_id))
        else:
            lease = self.sessions.admit_new("http")
        self.metrics.active_sessions.set(self.sessions.active)
        return Admission(self, lease)

    async def start(self, session: Session, request: Request, avatar: AvatarMeta) -> Utterance:
        """Open a new utterance on `session` (interrupting its current one) and start it."""
        mode = self.downstream.feature_mode_for(avatar)
        trim, lookahead = await self.downstream.lookahead_frames(mode, request.lookahead_trim)
        config = utterance_config(self.settings, session, request, avatar, mode, lookahead,
                                  trim)
        utterance = Utterance(self.downstream, config, session.id,
                              text_input=request.input == "text")
        self.sessions.begin(session, utterance)
        self.metrics.active_sessions.set(self.sessions.active)
        try:
            await utterance.start()
        except BaseException:
            await self.end_utterance(session, utterance, "failed to start")
            raise
        log.info("utterance.start", session_id=session.id, input=request.input,
                 avatar=avatar.name, mode=config.feature_mode, voice=request.voice)
        return utterance

    async def deliver(
        self, session: Session, utterance: Utterance, input_kind: str, started: float,
        avatar: AvatarMeta,
    ) -> AsyncGenerator[Frame, None]:
        """The utterance's frames, with metrics, debug dumps and the result recorded; ends
        the utterance (cancelling what still runs) however the consumer stops."""
        record = DeliveryRecord(self.metrics, self.debug, session, input_kind, started, avatar)
        try:
            async for frame in utterance.frames():
                record.add(frame)
                yield frame
            record.complete(self.results)
        except UtteranceInterrupted as err:
            record.outcome = err.reason
            raise
        except EdgeError as err:
            record.failed(err)
            raise
        finally:
            await self.end_utterance(session, utterance, "client gone", record.end(utterance))

    async def end_utterance(self, session: Session, utterance: Utterance, reason: str,
                            *after: Awaitable[None] | None) -> None:
        """Cancel `utterance`, wait for its tasks, run `after` (e.g. the debug dump's close),
        then mark it finished. Each step is guarded: a failing step is logged and the rest
        still run, and `finish` (which frees an implicitly taken slot) runs last whatever
        happened, cancellation included."""
        try:
            await _guarded("utterance.close", session.id, _close(utterance, reason))
            for step in after:
                if step is not None:
                    await _guarded("session.cleanup", session.id, step)
        finally:
            self.sessions.finish(session, utterance)
            self.metrics.active_sessions.set(self.sessions.active)


def utterance_config(settings: Settings, session: Session, request: Request,
                     avatar: AvatarMeta, mode: str, lookahead: int,
                     trim: int = 0) -> UtteranceConfig:
    """The settings of `session`'s next utterance: it starts where the last one left the
    avatar, and a gRPC session's frames count on across utterances."""
    start_frame = session.next_start_frame if avatar.num_frames > 0 else 0
    if request.start_frame is not None:
        if not 0 <= request.start_frame < max(avatar.num_frames, 1):
            raise bad_input(f"start_frame: expected 0..{max(avatar.num_frames, 1) - 1} (avatar "
                            f"{avatar.name!r} has {avatar.num_frames} frames), got "
                            f"{request.start_frame}")
        start_frame = request.start_frame
    if avatar.num_frames > 0:
        start_frame = min(start_frame, avatar.num_frames - 1)
    services = settings.services
    return UtteranceConfig(
        avatar=avatar.name,
        feature_mode=mode,
        lookahead_frames=lookahead,
        feature_trim=trim,
        voice=request.voice,
        encoding=request.encoding,
        jpeg_quality=request.jpeg_quality,
        start_frame=start_frame,
        index_offset=session.next_index if session.kind == "grpc" else 0,
        tail_flush_s=request.tail_flush_s,
        stream_timeout_s=services.max_stream_seconds + STREAM_DEADLINE_MARGIN_S,
        max_speech_samples=int(services.max_stream_seconds * SAMPLE_RATE)
        if request.input == "text" else None,
        stall_probe_s=services.stall_probe_s,
        stage_timeout_s=services.stage_timeout_s,
        first_frame_timeout_s=services.first_frame_timeout_s,
    )


class Admission:
    """An admitted HTTP request: its session's slot from admission until `close`, and the
    utterance it starts. `close` is idempotent and ends everything the request still holds
    (the utterance if it never reached `deliver`, then the slot, last and unconditionally)."""

    def __init__(self, rt: EdgeRuntime, lease: Lease) -> None:
        self.rt = rt
        self.lease = lease
        self.session = lease.session
        self.utterance: Utterance | None = None

    async def start(self, request: Request, avatar: AvatarMeta) -> Utterance:
        self.utterance = await self.rt.start(self.session, request, avatar)
        return self.utterance

    async def close(self) -> None:
        if self.lease.released:
            return
        try:
            if self.utterance is not None:
                await self.rt.end_utterance(self.session, self.utterance, "request ended")
        finally:
            self.lease.release()
            self.rt.metrics.active_sessions.set(self.rt.sessions.active)


async def _close(utterance: Utterance, reason: str) -> None:
    utterance.cancel(reason)
    await utterance.aclose()


async def _guarded(step: str, session_id: str, action: Awaitable[None]) -> None:
    """Await one cleanup step; an exception is logged (once, with the session id), not raised."""
    try:
        await action
    except Exception as err:  # noqa: BLE001 - a cleanup step must not stop the ones after it
        log.warning("session.cleanup_failed", session_id=session_id, step=step,
                    error=f"{type(err).__name__}: {err}")
