"""A live session: a browser's microphone drives the avatar in real time (WebSocket `/live`,
routed by services/edge/routes/live.py; protocol and limits in live_protocol.py).

The client sends one JSON config (text), then its microphone as binary s16le mono chunks;
the edge answers with the messages of the sound stream (services/edge/stream_format.py, one
per binary WebSocket message), so the page plays text, files and live input with one
player. The audio goes through the orchestration Animate uses (EdgeRuntime.start/deliver:
one audio utterance, streaming resampler) as one session counted against the cap.

Latency is kept bounded rather than let grow: each frame carries its `input_sample` and edge
lag (live_timeline.py); a frame that comes back from the renderer more than
`services.live_max_lag_s` after the look-ahead allows is dropped; and once the renderer is
behind by more than that (frames whose look-ahead is in but that have not come back), the
utterance is interrupted (its queued frames are never made) and the input goes on in a fresh
one, as a barge-in would. Both count as dropped frames, reported to the client in every frame
header. While the client pauses, the edge pads the look-ahead with silence (as Animate's
tail flush does) so the last frames of what was said come out.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import WebSocket

from services.edge import stream_format
from services.edge.animate import _Resampler
from services.edge.clients import AvatarMeta
from services.edge.errors import EdgeError
from services.edge.live_protocol import (
    GOING_AWAY,
    NORMAL,
    PAUSE_S,
    POLICY,
    SEND_QUEUE_FRAMES,
    UNSUPPORTED,
    InputMeter,
    LiveClose,
    LiveConfig,
    close_for,
    start_message,
)
from services.edge.live_timeline import Run
from services.edge.orchestrator import Frame, UtteranceInterrupted
from services.edge.runtime import EdgeRuntime, Request
from services.edge.sessions import Session
from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import common_pb2

log = get_logger("services.edge.live")


class Outbox:
    """Messages waiting for the client; one that stops reading is closed (1008)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(SEND_QUEUE_FRAMES)
        self.sent = 0

    def put(self, message: bytes) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            raise LiveClose(POLICY, f"the client is not reading: {SEND_QUEUE_FRAMES} frames "
                                    "waiting") from None

    async def write(self) -> None:
        while True:
            message = await self.queue.get()
            await self.ws.send_bytes(message)
            self.sent += 1


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
        self.meter = InputMeter(config.sample_rate)
        self.max_lag_s = rt.settings.services.live_max_lag_s
        self.budget_s = 0.0  # the lag beyond which a frame is dropped (set once started)
        self.run_: Run | None = None
        self.runs: asyncio.Queue[Run] = asyncio.Queue()
        self.input_samples = 0  # client audio after resampling, in 16 kHz samples
        self.last_input = time.monotonic()
        self.padded = True  # nothing to flush before the first input
        self.dropped_late = 0
        self.dropped_stale = 0
        self.restarts = 0
        self.outbox = Outbox(ws)

    @property
    def dropped(self) -> int:
        return self.dropped_late + self.dropped_stale

    async def _start_run(self) -> Run:
        """A new utterance (the current one, if any, is interrupted: its frames not yet made
        are never made)."""
        old = self.run_
        if old is not None:
            old.replaced = True
        request = Request(input="audio", encoding=common_pb2.IMAGE_ENCODING_JPEG,
                          jpeg_quality=self.config.jpeg_quality, tail_flush_s=None,
                          lookahead_trim=self.rt.settings.services.live_lookahead_trim,
                          start_frame=self.config.start_frame if old is None else None)
        utterance = await self.rt.start(self.session, request, self.avatar)
        if old is not None:
            stale = max(0, old.unsent)
            self.dropped_stale += stale
            self.restarts += 1
            self.rt.metrics.live_dropped.labels("stale").inc(stale)
            log.info("live.restart", session_id=self.session.id, stale_frames=stale)
        frames = self.rt.deliver(self.session, utterance, "live", time.monotonic(), self.avatar)
        self.run_ = Run(utterance, frames)
        self.runs.put_nowait(self.run_)
        return self.run_

    async def run(self) -> None:
        first = await self._start_run()
        lookahead = first.utterance.config.lookahead_frames
        self.budget_s = (lookahead + 1) * SAMPLES_PER_FRAME / SAMPLE_RATE + self.max_lag_s
        await self.ws.send_bytes(stream_format.message(
            start_message(self.session.id, self.avatar, lookahead, self.max_lag_s,
                          first.utterance.config.feature_trim)))
        svc = self.rt.settings.services
        tasks = [asyncio.ensure_future(c) for c in (
            self._read(svc.idle_timeout_s), self._pump(), self.outbox.write(), self._pad())]
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
        now = time.monotonic()
        self.meter.check(data, now)
        if not data:
            return
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
        run.feed(pcm, start, now)

    async def _pad(self) -> None:
        """Silence after a pause, so the frames the look-ahead holds back come out."""
        while True:
            await asyncio.sleep(PAUSE_S / 4)
            now = time.monotonic()
            run = self.run_
            if run is None or self.padded or now - self.last_input < PAUSE_S:
                continue
            run.pad(now)
            self.padded = True

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
        self.outbox.put(stream_format.frame_message(frame, {
            "input_sample": input_sample, "lag_ms": round(lag * 1000, 1),
            "dropped": self.dropped}))
