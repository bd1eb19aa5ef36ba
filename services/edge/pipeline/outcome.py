"""The one place that decides how an utterance ends.

Three things can end an utterance: its last frame (finished), a cancel by the client
(barge-in, disconnect, explicit cancel) and a failure (a downstream error, a stall the
watchdog caught, a limit such as the speech cap). The first of them wins: a failure after a
cancel is not reported, a cancel after a failure or the end changes nothing, and only the
first failure reaches the consumer. Whatever happens, everything still running is stopped.
"""

from __future__ import annotations

from collections.abc import Callable

from services.edge.errors import EdgeError
from services.edge.pipeline.frames import Stats, UtteranceInterrupted
from synctalk.log import get_logger

log = get_logger("services.edge.orchestrator")


class Outcome:
    """How the utterance ended so far; `report` hands the consumer its ending exception,
    `stop` cancels every stream and task still running."""

    def __init__(self, session_id: str, stats: Stats, *,
                 report: Callable[[BaseException], None], stop: Callable[[], None]) -> None:
        self.session_id = session_id
        self.stats = stats
        self._report = report
        self._stop = stop
        self.finished = False
        self.failure: EdgeError | None = None
        self.interrupted: str | None = None

    @property
    def active(self) -> bool:
        return not (self.finished or self.failure or self.interrupted)

    def finish(self) -> None:
        """The renderer's stream ended: every frame is out."""
        self.finished = True

    def fail(self, error: EdgeError) -> None:
        """A failure; reported unless a failure or a cancel came first."""
        if self.failure is None and not self.interrupted:
            self.failure = error
            log.info("utterance.failed", session_id=self.session_id, service=error.service,
                     code=error.code.name, reason=error.message)
            self._report(error)
        self._stop()

    def cancel(self, reason: str) -> None:
        """A cancel by the client; reported unless the utterance already ended."""
        if not self.active:
            self._stop()
            return
        self.interrupted = reason
        self._stop()
        self._report(UtteranceInterrupted(reason))
        log.info("utterance.cancelled", session_id=self.session_id, reason=reason,
                 frames=self.stats.frames)
