"""What delivering an utterance's frames records: metrics per frame, the debug dump, the
result mp4, how the utterance ended, and the avatar frame the session's next utterance
starts from."""

from __future__ import annotations

import time

from services.edge.clients import AvatarMeta
from services.edge.debug import DebugRecorder
from services.edge.errors import EdgeError
from services.edge.metrics import EdgeMetrics
from services.edge.orchestrator import Frame, Utterance
from services.edge.results import ResultRecorder, ResultStore
from services.edge.sessions import Session
from synctalk.config import DebugConfig
from synctalk.log import get_logger

MAX_RESULT_SECONDS = 120.0

log = get_logger("services.edge")


class DeliveryRecord:
    """The bookkeeping of one `EdgeRuntime.deliver`, frame by frame and at its end."""

    def __init__(self, metrics: EdgeMetrics, debug: DebugConfig, session: Session,
                 input_kind: str, started: float, avatar: AvatarMeta) -> None:
        self.metrics = metrics
        self.session = session
        self.input_kind = input_kind
        self.started = started
        self.avatar = avatar
        try:
            self.debug = DebugRecorder.maybe(debug, session)
        except Exception as err:  # noqa: BLE001 - a dump must never stop the stream
            log.warning("debug.unavailable", session_id=session.id, error=repr(err))
            self.debug = None
        self.result = ResultRecorder(int(MAX_RESULT_SECONDS * 25))
        self.outcome = "disconnected"
        self.last_source = -1
        self.first = True

    def add(self, frame: Frame) -> None:
        metrics = self.metrics
        if self.first:
            self.first = False
            metrics.time_to_first_frame.labels(self.input_kind).observe(
                time.monotonic() - self.started)
        metrics.frames.labels(self.input_kind).inc()
        metrics.frame_latency.observe(frame.render_latency_s)
        if self.debug is not None:
            self.debug.add(frame)
        self.result.add(frame)
        self.last_source = frame.source_frame
        self.session.next_index = frame.index + 1

    def complete(self, results: ResultStore) -> None:
        """Every frame went out: keep the result for `/result/{session}.mp4`."""
        self.outcome = "complete"
        if results.put(self.session.id, self.result):
            self.session.last_result = f"/result/{self.session.id}.mp4"
        else:
            self.session.last_result = None

    def failed(self, err: EdgeError) -> None:
        self.outcome = "error"
        self.metrics.downstream_errors.labels(err.service, err.code.name).inc()

    async def end(self, utterance: Utterance) -> None:
        """Record how the utterance ended and close the debug dump; run as one guarded cleanup
        step, so nothing here can keep the session's slot."""
        session, frames = self.session, self.avatar.num_frames
        if self.last_source >= 0:
            session.last_source = self.last_source
        if self.last_source >= 0 and frames > 1:
            nxt = self.last_source + 1
            session.next_start_frame = nxt if nxt < frames else self.last_source - 1
        self.metrics.utterances.labels(self.input_kind, self.outcome).inc()
        log.info("utterance.end", session_id=session.id, outcome=self.outcome,
                 frames=utterance.stats.frames, samples=utterance.timeline.samples)
        if self.debug is not None:
            await self.debug.close()
