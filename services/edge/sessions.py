"""Sessions: server-made ids, one utterance at a time, and a cap on concurrent streams.

A session lives across utterances so that a client can interrupt itself (barge-in: a new
utterance on a busy session cancels the one in progress) and fetch the result of its last
one. Ids are made here, never taken from a client, so they are safe as file names for the
debug dumps. A session is busy while it holds a `Lease`: an HTTP request takes one when it
is admitted (before its upload is read or its text checked downstream) and gives it back when
its utterance ends; an Animate call holds one while it is open. At most `max_active` sessions
are busy at once, the rest get 503 with Retry-After (RESOURCE_EXHAUSTED on gRPC). A lease is
released exactly once whatever path ends it, so no failure can keep a slot.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from services.edge.errors import busy, unknown

if TYPE_CHECKING:
    from services.edge.orchestrator import Utterance

SESSION_ID_RE = re.compile(r"^[0-9a-f]{32}$")
RETRY_AFTER_S = 2


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(eq=False)
class Session:
    id: str
    kind: Literal["http", "grpc"]
    created: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    utterance: Utterance | None = None
    utterances: int = 0
    next_index: int = 0  # first frame index of the next utterance (gRPC sessions count on)
    next_start_frame: int = 0  # avatar source frame the next utterance starts its walk at
    last_source: int = -1  # avatar source frame of the last frame sent (-1: none yet)
    debug_frames: int = 0  # frames dumped so far (debug file names count on across utterances)
    last_result: str | None = None  # URL of the last completed utterance's mp4

    def touch(self) -> None:
        self.last_active = time.monotonic()


class Lease:
    """A session's claim on a slot; `release` is idempotent, so every exit path may call it
    and the slot is given back exactly once."""

    def __init__(self, manager: SessionManager, session: Session) -> None:
        self._manager = manager
        self.session = session
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._manager._drop(self.session.id)


class SessionManager:
    """Creates, finds and caps sessions; keeps idle HTTP sessions for `idle_ttl_s`."""

    def __init__(self, max_active: int, idle_ttl_s: float = 600.0, max_kept: int = 1024) -> None:
        self.max_active = max_active
        self.idle_ttl_s = idle_ttl_s
        self.max_kept = max_kept
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._holds: dict[str, int] = {}  # session id -> leases held (barge-in overlaps two)
        self._implicit: dict[int, Lease] = {}  # id(utterance) -> lease `begin` took for it
        self._streams: dict[str, Lease] = {}

    @property
    def active(self) -> int:
        return len(self._holds)

    def admit(self, session: Session) -> Lease:
        """A slot for `session`: free if it is busy already (barge-in passes its slot on),
        else 503 when `max_active` sessions are busy."""
        if session.id not in self._holds:
            self._check_capacity()
        self._holds[session.id] = self._holds.get(session.id, 0) + 1
        session.touch()
        return Lease(self, session)

    def admit_new(self, kind: Literal["http", "grpc"] = "http") -> Lease:
        """A new session with a slot; 503 (and no session made) when every slot is taken."""
        self._check_capacity()
        return self.admit(self.create(kind))

    def _drop(self, session_id: str) -> None:
        left = self._holds.get(session_id, 0) - 1
        if left > 0:
            self._holds[session_id] = left
        else:
            self._holds.pop(session_id, None)

    def create(self, kind: Literal["http", "grpc"]) -> Session:
        self._evict()
        session = Session(new_session_id(), kind)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, kind: Literal["http", "grpc"] = "http") -> Session:
        """The session `session_id`; 404 for an id this server did not make (or forgot), or
        one of the other kind (an Animate call's session is its own)."""
        session = self._sessions.get(session_id) if SESSION_ID_RE.match(session_id) else None
        if session is None or session.kind != kind:
            raise unknown("session", session_id)
        session.touch()
        return session

    def begin(self, session: Session, utterance: Utterance) -> None:
        """Make `utterance` the session's current one: a running one is interrupted
        (barge-in, its slot passes on). A session not admitted yet is admitted here, for
        as long as the utterance lasts (`finish` gives that slot back)."""
        current = session.utterance
        if session.id not in self._holds or id(current) in self._implicit:
            self._implicit[id(utterance)] = self.admit(session)
        if current is not None:
            current.cancel("interrupted")
        session.utterance = utterance
        session.utterances += 1
        session.touch()

    def finish(self, session: Session, utterance: Utterance) -> None:
        """`utterance` has ended (safe to call more than once)."""
        if session.utterance is utterance:
            session.utterance = None
        implicit = self._implicit.pop(id(utterance), None)
        if implicit is not None:
            implicit.release()
        session.touch()

    def open_stream(self) -> Session:
        """A gRPC Animate session: busy until `close_stream`."""
        self._check_capacity()
        session = self.create("grpc")
        self._streams[session.id] = self.admit(session)
        return session

    def close_stream(self, session: Session) -> None:
        if session.utterance is not None:
            session.utterance.cancel("stream closed")
            session.utterance = None
        lease = self._streams.pop(session.id, None)
        if lease is not None:
            lease.release()
        self._sessions.pop(session.id, None)

    def cancel(self, session: Session, reason: str = "cancelled") -> bool:
        """Stop the session's utterance in progress; False if there was none."""
        current = session.utterance
        if current is None or not current.active:
            return False
        current.cancel(reason)
        return True

    def cancel_all(self, reason: str = "shutdown") -> None:
        for session in list(self._sessions.values()):
            if session.utterance is not None:
                session.utterance.cancel(reason)

    def _check_capacity(self) -> None:
        if len(self._holds) >= self.max_active:
            raise busy(f"too many concurrent sessions (limit {self.max_active}); retry shortly",
                       RETRY_AFTER_S)

    def _evict(self) -> None:
        """Forget idle sessions past their time to live, and the oldest idle ones past the cap."""
        now = time.monotonic()
        for sid, session in list(self._sessions.items()):
            idle = sid not in self._holds
            if idle and (now - session.last_active > self.idle_ttl_s
                         or len(self._sessions) >= self.max_kept):
                del self._sessions[sid]
