"""One utterance through the three services: (text ->) TTS -> AudioFeatures -> Renderer.

Every downstream service gets a bidirectional gRPC stream opened once per utterance, and
every stage of the chain (stages.py) is driven by its own `pump` task, so audio, features
and frames flow concurrently. `cancel()` cancels all three calls at once (client gone,
barge-in, explicit cancel); the first downstream failure cancels the others and is reported
with the name of the service at fault; `Outcome` alone decides which of them wins.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from services.edge.clients import RENDERER, TTS, Downstream
from services.edge.pipeline.calls import StageCalls
from services.edge.pipeline.frames import Frame, PcmTimeline, Stats, UtteranceConfig
from services.edge.pipeline.outcome import Outcome
from services.edge.pipeline.output import FrameOutput
from services.edge.pipeline.stage import Stage, pump
from services.edge.pipeline.stages import (
    AudioFeed,
    FeaturesStage,
    InputStage,
    RendererStage,
    TtsStage,
)
from services.edge.pipeline.watchdog import StageWatchdog, pad_tail
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2, tts_pb2


class Utterance:
    """Drive one utterance; feed it with `send_text`/`send_audio`/`send_end`, read `frames()`.

    Input is queued and fed downstream by a task of the utterance, so the caller never
    blocks on flow control; `queued_bytes` lets it bound the queue. Errors end `frames()`,
    never the caller."""

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
        self.stats = Stats()
        self._output = FrameOutput()
        self._tasks: list[asyncio.Task[None]] = []
        self._outcome = Outcome(session_id, self.stats, report=self._output.replace,
                                stop=self._stop_all)
        self._calls = StageCalls(self._outcome)
        self._feed = AudioFeed(self._calls, self.timeline)
        self._input = InputStage(self._calls, self._feed, text_input=text_input)

    # -- set-up ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the downstream streams, send their first messages and start the stages."""
        cfg, calls = self.config, self._calls
        calls.open(self.downstream, self.session_id, cfg, text_input=self.text_input)
        render_config = renderer_pb2.RenderConfig(
            avatar=cfg.avatar,
            encoding=cfg.encoding,
            jpeg_quality=cfg.jpeg_quality,
            start_frame=cfg.start_frame,
        )
        await calls.write(RENDERER, renderer_pb2.RenderRequest(config=render_config))
        sent_at: dict[int, float] = {}
        stages: list[Stage] = [self._input, FeaturesStage(calls, sent_at), RendererStage(
            calls, sent_at, self.timeline, self.stats, self._output,
            index_offset=cfg.index_offset, finish=self._outcome.finish)]
        if self.text_input:
            tts_config = tts_pb2.SynthesizeConfig(voice=cfg.voice, sample_rate=SAMPLE_RATE)
            await calls.write(TTS, tts_pb2.SynthesizeRequest(config=tts_config))
            stages.insert(0, TtsStage(calls, self._feed, cfg.max_speech_samples))
        for stage in stages:
            self._spawn(pump(stage, self._outcome.fail, calls.rpc_error))
        if cfg.tail_flush_s is not None:
            self._spawn(pad_tail(self._input, self._feed, self.stats, quiet_s=cfg.tail_flush_s,
                                 lookahead_frames=cfg.lookahead_frames,
                                 fail=self._outcome.fail))
        self._spawn(StageWatchdog(calls, self._outcome, cfg, self.stats, self._feed,
                                  self.downstream.health_of).run())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    # -- input -------------------------------------------------------------------------

    def send_text(self, piece: str | bytes) -> None:
        """Text for TTS; bytes may split multi-byte characters (TTS joins and validates).
        Never raises: text that is not valid Unicode goes as is and TTS refuses it
        (INVALID_ARGUMENT), which ends `frames()`."""
        data = piece.encode("utf-8", "surrogatepass") if isinstance(piece, str) else piece
        self._input.put("text", data)

    def send_audio(self, pcm: bytes) -> None:
        """16 kHz mono s16le audio, any length."""
        if pcm:
            self._input.put("audio", pcm)

    def send_end(self) -> None:
        """No more input: the rest of the text is spoken and every remaining frame flushed."""
        if not self._input.ended:
            self._input.put("end", None)

    def submit(self, *, text: str | None = None, pcm: bytes | None = None) -> None:
        """The whole input of a one-shot request, then its end."""
        if text is not None:
            self.send_text(text)
        if pcm is not None:
            self.send_audio(pcm)
        self.send_end()

    @property
    def queued_bytes(self) -> int:
        """Input audio accepted but not yet sent downstream."""
        return self._input.queued_bytes

    async def wait_queue_below(self, limit_bytes: int) -> None:
        # Polled: the count drops chunk by chunk in the input stage and the utterance can
        # end from any stage; one condition covering both is not worth its wiring here.
        while self.queued_bytes > limit_bytes and self.active:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    # -- output ------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._outcome.active

    def frames(self) -> AsyncIterator[Frame]:
        """Frames in order, each with its audio; raises EdgeError or UtteranceInterrupted."""
        return self._output.frames()

    @property
    def interrupted(self) -> str | None:
        return self._outcome.interrupted

    # -- teardown ----------------------------------------------------------------------

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel every downstream stream at once and end `frames()` with UtteranceInterrupted."""
        self._outcome.cancel(reason)

    async def aclose(self) -> None:
        """Cancel what still runs and wait for the pump tasks to end."""
        self._stop_all()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _stop_all(self) -> None:
        self._calls.cancel_all()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
