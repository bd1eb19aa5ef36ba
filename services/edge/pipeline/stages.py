"""The chain's stages: client input -> TTS -> AudioFeatures -> Renderer -> frames.

Each is a `Stage` driven by `pump`; each pushes downstream by writing to the next service's
stream (or, for the renderer, to the consumer's queue), so gRPC flow control carries
back-pressure from a slow consumer all the way up to TTS. Audio joins the timeline as it is
sent to AudioFeatures, so each rendered frame leaves with exactly the samples it was rendered
from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc

from services.edge.clients import FEATURES, RENDERER, TTS
from services.edge.errors import EdgeError
from services.edge.pipeline.calls import StageCalls
from services.edge.pipeline.frames import (
    CHUNK_SAMPLES,
    Frame,
    PcmTimeline,
    Stats,
)
from services.edge.pipeline.output import FrameOutput
from services.edge.pipeline.stage import END_OF_STREAM, Stage
from services.edge.speech import speech_limit_error
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2, tts_pb2


class AudioFeed:
    """Audio on its way to AudioFeatures: appended to the timeline, then sent, under one lock
    so a tail pad and the end of input never interleave."""

    def __init__(self, calls: StageCalls, timeline: PcmTimeline) -> None:
        self.calls = calls
        self.timeline = timeline
        self.lock = asyncio.Lock()
        self.first_audio_at: float | None = None
        self.last_input = time.monotonic()
        self.tail_due = False  # audio went out since the last tail pad

    def touch(self) -> None:
        """Input arrived (from the client or from TTS)."""
        self.last_input = time.monotonic()

    async def feed(self, pcm: bytes) -> None:
        if not pcm:
            return
        async with self.lock:
            if FEATURES in self.calls.writes_done:  # a tail pad lost a race with the input's end
                return
            start = self.timeline.samples
            self.timeline.append(pcm)
            chunk = common_pb2.AudioChunk(pcm=pcm, sample_rate=SAMPLE_RATE, start_sample=start)
            self.calls.owe(FEATURES)
            await self.calls.write(FEATURES, chunk)
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
            self.tail_due = True

    async def close(self) -> None:
        async with self.lock:
            await self.calls.done_writing(FEATURES)


class InputStage(Stage):
    """The client's input, queued so the caller never blocks on flow control (it can still
    see, and act on, a cancel sent behind a burst of audio); text goes to TTS, audio to
    AudioFeatures in 0.5 s chunks."""

    def __init__(self, calls: StageCalls, feed: AudioFeed, *, text_input: bool) -> None:
        self.calls = calls
        self.feed = feed
        self.text_input = text_input
        self.service = TTS if text_input else FEATURES
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.queued_bytes = 0
        self.ended = False

    def put(self, kind: str, data: Any) -> None:
        if kind == "audio":
            self.queued_bytes += len(data)
        elif kind == "end":
            self.ended = True
        self.inbox.put_nowait((kind, data))

    async def receive(self) -> Any:
        kind, data = await self.inbox.get()
        self.feed.touch()
        return END_OF_STREAM if kind == "end" else (kind, data)

    async def process(self, message: Any) -> None:
        kind, data = message
        if kind == "text":
            await self.calls.write(TTS, tts_pb2.SynthesizeRequest(text=data))
            return
        step = CHUNK_SAMPLES * 2
        for offset in range(0, len(data), step):
            await self.feed.feed(data[offset : offset + step])
        self.queued_bytes -= len(data)

    async def close(self) -> None:
        if self.text_input:
            await self.calls.done_writing(TTS)
        else:
            await self.feed.close()


class TtsStage(Stage):
    """Speech from TTS into the audio feed, checked for its rate and the speech cap."""

    service = TTS

    def __init__(self, calls: StageCalls, feed: AudioFeed, max_samples: int | None) -> None:
        self.calls = calls
        self.feed = feed
        self.max_samples = max_samples

    async def receive(self) -> Any:
        return await self.calls.read(TTS)

    async def process(self, message: Any) -> None:
        if message.sample_rate not in (0, SAMPLE_RATE):
            raise EdgeError(502, grpc.StatusCode.INTERNAL,
                            f"tts sent {message.sample_rate} Hz audio, expected {SAMPLE_RATE}",
                            service=TTS)
        self.feed.touch()
        limit = self.max_samples
        if limit is not None and self.feed.timeline.samples + len(message.pcm) // 2 > limit:
            raise speech_limit_error(limit / SAMPLE_RATE)
        await self.feed.feed(bytes(message.pcm))

    async def close(self) -> None:
        await self.feed.close()


class FeaturesStage(Stage):
    """Feature frames from AudioFeatures to the renderer, each timed from when it is sent."""

    service = FEATURES

    def __init__(self, calls: StageCalls, sent_at: dict[int, float]) -> None:
        self.calls = calls
        self.sent_at = sent_at

    async def receive(self) -> Any:
        return await self.calls.read(FEATURES)

    async def process(self, message: Any) -> None:
        self.sent_at[message.index] = time.monotonic()
        self.calls.owe(RENDERER)
        await self.calls.write(RENDERER, renderer_pb2.RenderRequest(frame=message))

    async def close(self) -> None:
        await self.calls.done_writing(RENDERER)


class RendererStage(Stage):
    """Video frames from the renderer, in order, joined with their audio, to the consumer."""

    service = RENDERER

    def __init__(self, calls: StageCalls, sent_at: dict[int, float], timeline: PcmTimeline,
                 stats: Stats, output: FrameOutput, *, index_offset: int,
                 finish: Callable[[], None]) -> None:
        self.calls = calls
        self.sent_at = sent_at
        self.timeline = timeline
        self.stats = stats
        self.output = output
        self.index_offset = index_offset
        self.finish = finish
        self.expected = 0

    def _owes_more(self, message: Any) -> bool:
        """The renderer still owes frames it was sent besides this one."""
        return any(i != message.index for i in self.sent_at)

    async def receive(self) -> Any:
        return await self.calls.read(RENDERER, self._owes_more)

    async def process(self, message: Any) -> None:
        if message.index != self.expected:
            raise EdgeError(502, grpc.StatusCode.INTERNAL,
                            f"renderer sent frame {message.index}, expected {self.expected}",
                            service=RENDERER)
        self.expected += 1
        now = time.monotonic()
        sent = self.sent_at.pop(message.index, now)
        if self.stats.first_frame_at is None:
            self.stats.first_frame_at = now
        self.stats.frames += 1
        index = self.index_offset + message.index
        await self.output.push(Frame(
            index=index,
            pts_ms=40 * index,
            image=bytes(message.data),
            encoding=message.encoding,
            width=message.width,
            height=message.height,
            audio=self.timeline.take(message.index),
            source_frame=message.source_frame,
            idle=message.idle,
            render_latency_s=now - sent,
        ))

    async def close(self) -> None:
        self.finish()
        await self.output.end()
