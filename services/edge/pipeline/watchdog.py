"""The utterance's two watchers: the stall watchdog and the live-input tail pad.

The watchdog bounds every wait on a stage: a stage that owes an answer (it has been sent
work and the edge is waiting to read) and stays silent for `stall_probe_s` has its health
checked, and two failed checks in a row (a stopped or wedged process) end the utterance
UNAVAILABLE naming it; a stage that is alive but silent past its deadline ends it
DEADLINE_EXCEEDED naming it. Time the edge itself spends blocked (a slow reader downstream of
it) never counts as a stall.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from services.edge.errors import EdgeError
from services.edge.pipeline.calls import StageCalls
from services.edge.pipeline.frames import Stats, UtteranceConfig
from services.edge.pipeline.outcome import Outcome
from services.edge.pipeline.stages import AudioFeed, InputStage
from synctalk.audio.pcm import SAMPLES_PER_FRAME

TAIL_MARGIN_S = 0.15  # pad live input this long before the player would run out of frames
STAGE_WATCH_S = 0.25  # how often the watchdog looks at the stages
# A stalled stage is declared wedged after this many failed health checks in a row, this far
# apart: one check that misses its 1 s deadline may be a busy machine, two are a hang.
STALL_CONFIRMATIONS = 2
STALL_PROBE_GAP_S = 0.5


@dataclass
class StageWatchdog:
    """Ends the utterance when a stage is wedged (health fails) or silent past its deadline."""

    calls: StageCalls
    outcome: Outcome
    config: UtteranceConfig
    stats: Stats
    feed: AudioFeed
    health_of: Callable[[str], Awaitable[str]]
    _next_probe: dict[str, float] = field(default_factory=dict)
    _failed_probes: dict[str, int] = field(default_factory=dict)

    async def run(self) -> None:
        while self.outcome.active:
            await asyncio.sleep(STAGE_WATCH_S)
            error = self._first_frame_late(time.monotonic()) or await self._check_stages()
            if error is not None:
                self.outcome.fail(error)
                return

    def _first_frame_late(self, now: float) -> EdgeError | None:
        cfg = self.config
        first_audio = self.feed.first_audio_at
        if (self.stats.first_frame_at is not None or first_audio is None
                or now - first_audio <= cfg.first_frame_timeout_s):
            return None
        service = max(self.calls.calls, key=lambda name: self.calls.stalled_for(name, now))
        return EdgeError(
            504, grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no first frame within {cfg.first_frame_timeout_s:g} s "
            f"(services.first_frame_timeout_s); {service} service is behind",
            service=service)

    async def _check_stages(self) -> EdgeError | None:
        cfg = self.config
        now = time.monotonic()
        for service in list(self.calls.calls):
            stalled = self.calls.stalled_for(service, now)
            limit = cfg.stage_timeout_s if service in self.calls.answered \
                else cfg.first_frame_timeout_s
            if stalled > limit:
                return EdgeError(
                    504, grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{service} service answered nothing for {stalled:.1f} s "
                    f"(limit {limit:g} s)", service=service)
            if stalled < cfg.stall_probe_s:
                self._failed_probes[service] = 0
                continue
            if now < self._next_probe.get(service, 0.0):
                continue
            state = await self.health_of(service)
            self._next_probe[service] = time.monotonic() + STALL_PROBE_GAP_S
            if state == "ok" or self.calls.stalled_for(service, time.monotonic()) == 0:
                self._failed_probes[service] = 0
                continue
            self._failed_probes[service] = self._failed_probes.get(service, 0) + 1
            if self._failed_probes[service] >= STALL_CONFIRMATIONS:
                return EdgeError(
                    503, grpc.StatusCode.UNAVAILABLE,
                    f"{service} service unavailable: no answer for {stalled:.1f} s "
                    f"and its health check says {state}", service=service, retry_after_s=5)
        return None


async def pad_tail(inp: InputStage, feed: AudioFeed, stats: Stats, *, quiet_s: float,
                   lookahead_frames: int, fail: Callable[[EdgeError], None]) -> None:
    """Pad silence when live input pauses and the player is about to run out of frames,
    so the frames the look-ahead holds back come out instead of waiting for more input.
    Input that arrives in time (the next sentence from TTS) gets no pause inserted."""
    pad_frames = lookahead_frames + 2
    while not inp.ended:
        await asyncio.sleep(quiet_s / 4)
        now = time.monotonic()
        idle = (feed.tail_due and inp.queued_bytes == 0 and inp.inbox.empty()
                and now - feed.last_input >= quiet_s)
        first = stats.first_frame_at
        starving = first is None or now - first >= stats.frames * 0.04 - TAIL_MARGIN_S
        if not (idle and starving):
            continue
        to_boundary = (-feed.timeline.samples) % SAMPLES_PER_FRAME
        silence = b"\0" * 2 * (to_boundary + pad_frames * SAMPLES_PER_FRAME)
        try:
            await feed.feed(silence)
        except EdgeError as err:
            fail(err)
        feed.tail_due = False
