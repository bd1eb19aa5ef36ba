"""What the HTTP API and the gRPC Avatar service share: downstream channels, sessions,
metrics, results, the live debug settings, and the loop that delivers an utterance.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from services.edge.clients import AvatarMeta, Downstream
from services.edge.debug import DebugRecorder
from services.edge.errors import EdgeError, bad_input
from services.edge.metrics import EdgeMetrics
from services.edge.orchestrator import Frame, Utterance, UtteranceConfig, UtteranceInterrupted
from services.edge.results import ResultRecorder, ResultStore
from services.edge.sessions import Session, SessionManager
from synctalk.config import Settings
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import common_pb2

DEFAULT_AVATAR = "demo"  # until the config grows `services.default_avatar`
MAX_RESULT_SECONDS = 120.0
STREAM_DEADLINE_MARGIN_S = 60.0

log = get_logger("services.edge")


def default_avatar(settings: Settings) -> str:
    return str(getattr(settings.services, "default_avatar", "") or DEFAULT_AVATAR)


@dataclass(frozen=True)
class Request:
    """One utterance as a client asked for it, after parsing."""

    input: str  # "text" or "audio"
    avatar: str = ""
    voice: str = ""
    encoding: int = common_pb2.IMAGE_ENCODING_JPEG
    jpeg_quality: int = 0
    tail_flush_s: float | None = None


class EdgeRuntime:
    def __init__(self, settings: Settings, downstream: Downstream | None = None) -> None:
        self.settings = settings
        self.debug = settings.debug.model_copy()
        self.downstream = downstream or Downstream(
            settings.services,
            default_avatar=default_avatar(settings),
            feature_mode=settings.models.feature_mode,
        )
        self.sessions = SessionManager(settings.services.max_sessions)
        self.metrics = EdgeMetrics()
        self.results = ResultStore()

    async def close(self) -> None:
        self.sessions.cancel_all()
        await self.downstream.close()

    def check_text(self, text: str) -> str:
        if not text or not text.strip():
            raise bad_input("text: must not be empty")
        limit = self.settings.tts.max_text_chars
        if len(text) > limit:
            raise bad_input(f"text: {len(text)} characters, the limit is {limit}")
        return text

    async def avatar(self, name: str) -> AvatarMeta:
        return await self.downstream.avatar(name)

    async def check_voice(self, voice: str) -> str:
        meta = await self.downstream.voice(voice)
        if meta.engine == "espeak-ng":
            self.metrics.fallbacks.labels("tts_espeak").inc()
        return meta.id

    async def start(self, session: Session, request: Request, avatar: AvatarMeta) -> Utterance:
        """Open a new utterance on `session` (interrupting its current one) and start it."""
        start_frame = session.next_start_frame if avatar.num_frames > 0 else 0
        if avatar.num_frames > 0:
            start_frame = min(start_frame, avatar.num_frames - 1)
        mode = self.downstream.feature_mode_for(avatar)
        lookahead = await self.downstream.lookahead_frames(mode)
        config = UtteranceConfig(
            avatar=avatar.name,
            feature_mode=mode,
            lookahead_frames=lookahead,
            voice=request.voice,
            encoding=request.encoding,
            jpeg_quality=request.jpeg_quality,
            start_frame=start_frame,
            index_offset=session.next_index if session.kind == "grpc" else 0,
            tail_flush_s=request.tail_flush_s,
            stream_timeout_s=self.settings.services.max_stream_seconds + STREAM_DEADLINE_MARGIN_S,
        )
        utterance = Utterance(self.downstream, config, session.id,
                              text_input=request.input == "text")
        self.sessions.begin(session, utterance)
        self.metrics.active_sessions.set(self.sessions.active)
        try:
            await utterance.start()
        except EdgeError:
            utterance.cancel("failed to start")
            await utterance.aclose()
            self.sessions.finish(session, utterance)
            self.metrics.active_sessions.set(self.sessions.active)
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
        debug = DebugRecorder.maybe(self.debug, session)
        result = ResultRecorder(int(MAX_RESULT_SECONDS * 25))
        metrics = self.metrics
        outcome = "disconnected"
        last_source = -1
        first = True
        try:
            async for frame in utterance.frames():
                if first:
                    first = False
                    metrics.time_to_first_frame.labels(input_kind).observe(
                        time.monotonic() - started)
                metrics.frames.labels(input_kind).inc()
                metrics.frame_latency.observe(frame.render_latency_s)
                if debug is not None:
                    debug.add(frame)
                result.add(frame)
                last_source = frame.source_frame
                session.next_index = frame.index + 1
                yield frame
            outcome = "complete"
            if self.results.put(session.id, result):
                session.last_result = f"/result/{session.id}.mp4"
            else:
                session.last_result = None
        except UtteranceInterrupted as err:
            outcome = err.reason
            raise
        except EdgeError as err:
            outcome = "error"
            metrics.downstream_errors.labels(err.service, err.code.name).inc()
            raise
        finally:
            utterance.cancel("client gone")
            await utterance.aclose()
            if last_source >= 0 and avatar.num_frames > 1:
                nxt = last_source + 1
                session.next_start_frame = nxt if nxt < avatar.num_frames else last_source - 1
            if debug is not None:
                await debug.close()
            self.sessions.finish(session, utterance)
            metrics.active_sessions.set(self.sessions.active)
            metrics.utterances.labels(input_kind, outcome).inc()
            log.info("utterance.end", session_id=session.id, outcome=outcome,
                     frames=utterance.stats.frames, samples=utterance.timeline.samples)
