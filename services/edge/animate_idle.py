"""Animate's idle frames between utterances (`AnimateConfig.idle_between_utterances`).

While a call is quiet (no utterance starting, running or delivering, input still open) the
edge sends the avatar's idle loop at 25 frames/s: frames from the edge's copy of the
renderer's loop (services/edge/idle_loops.py), so idling costs no U-Net time, each with 640
samples of silence so sound and pictures keep one clock. Indices and pts count on, and the
session's walk follows the loop, so the next utterance starts from the idle frame the call
is on. An utterance whose input has paused for `IDLE_AFTER_S` with no frame out in that time
has its input ended, so a live client's pause becomes idling too.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

from services.edge.errors import EdgeError
from services.edge.orchestrator import Frame
from synctalk.log import get_logger

if TYPE_CHECKING:
    from services.edge.clients import AvatarMeta
    from services.edge.runtime import EdgeRuntime
    from services.edge.sessions import Session
    from synctalk.rpc.gen.lipsync.v1 import avatar_pb2

IDLE_AFTER_S = 1.0
FRAME_S = 0.04
SILENT_AUDIO = bytes(1280)  # 640 samples of s16le silence

log = get_logger("services.edge.animate")


class IdleCall(Protocol):
    """What the idle feeder needs of an Animate call."""

    rt: EdgeRuntime
    session: Session
    avatar: AvatarMeta
    config: avatar_pb2.AnimateConfig
    out: asyncio.Queue

    @property
    def quiet(self) -> bool: ...

    def end_paused_input(self, now: float) -> None: ...


async def feed_idle(call: IdleCall, encoding: int) -> None:
    """Run for the call's life: idle frames whenever it is quiet (cancel to stop)."""
    try:
        loop = await call.rt.idle_loops.get(call.avatar, encoding, call.config.jpeg_quality)
    except EdgeError as err:
        log.warning("animate.no_idle_loop", session_id=call.session.id, reason=err.message)
        return
    session, shape = call.session, loop.shape
    position: int | None = None
    due = time.monotonic()
    while True:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        due = max(due + FRAME_S, now - FRAME_S)  # a stalled reader costs a frame, not a burst
        call.end_paused_input(now)
        if not call.quiet:
            position = None
            continue
        if position is None:
            position = shape.resume_after(session.last_source)
            log.info("animate.idle", session_id=session.id, from_source=shape.source(position))
        frame = loop.frames[position % shape.length]
        index = session.next_index
        # The session moves on before the frame is queued, so an utterance that starts
        # meanwhile follows this frame.
        session.next_index = index + 1
        session.last_source = int(frame.source_frame)
        session.next_start_frame = shape.start_after(position)
        position += 1
        await call.out.put((None, Frame(index, index * 40, frame.data, frame.encoding,
                                        frame.width, frame.height, SILENT_AUDIO,
                                        int(frame.source_frame), True, 0.0)))
