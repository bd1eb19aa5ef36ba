"""lipsync.v1.AudioFeatures: PCM in, one FeatureFrame per 40 ms video frame out.

Small chunks are held until the extractor can emit its next frame (`samples_wanted`), then
pushed together in a worker thread, so a client sending one sample per message costs no more
model calls than one sending whole seconds, and nothing is delayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor

import grpc
import numpy as np

from services.audio_features import metrics
from services.audio_features.chunks import ChunkCursor
from synctalk.audio.levels import LevelMeter, is_voiced
from synctalk.audio.windows import MAX_TRIM
from synctalk.features.base import FeatureExtractor, FeatureStream, Frame
from synctalk.log import get_logger
from synctalk.rpc.errors import invalid, rejects_bad_streams
from synctalk.rpc.gen.lipsync.v1 import audio_features_pb2, audio_features_pb2_grpc, common_pb2

MODE_METADATA_KEY = "x-feature-mode"
TRIM_METADATA_KEY = "x-feature-trim"

log = get_logger("services.audio_features")


def feature_frame(index: int, features: np.ndarray, mode: str, rms: float) -> common_pb2.FeatureFrame:
    return common_pb2.FeatureFrame(
        index=index,
        pts_ms=40 * index,
        features=common_pb2.Tensor(
            data=np.ascontiguousarray(features, "<f4").tobytes(),
            shape=list(features.shape),
            dtype=common_pb2.DTYPE_FLOAT32,
        ),
        mode=mode,
        rms=rms,
        voiced=is_voiced(rms),
    )


def mode_message(name: str, extractor: FeatureExtractor,
                 is_default: bool) -> audio_features_pb2.FeatureMode:
    return audio_features_pb2.FeatureMode(name=name, shape=list(extractor.shape),
                                          lookahead_frames=extractor.lookahead_frames,
                                          is_default=is_default,
                                          trimmed_lookahead_frames=[
                                              extractor.lookahead_for(t)
                                              for t in range(MAX_TRIM + 1)])


class AudioFeaturesServicer(audio_features_pb2_grpc.AudioFeaturesServicer):
    def __init__(
        self,
        extractors: Mapping[str, FeatureExtractor],
        default_mode: str,
        executor: Executor,
        max_stream_seconds: float,
    ) -> None:
        self.extractors = dict(extractors)
        self.default_mode = default_mode
        self.executor = executor
        self.max_stream_seconds = max_stream_seconds

    def mode_of(self, context: grpc.aio.ServicerContext) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == MODE_METADATA_KEY:
                if value not in self.extractors:
                    raise invalid(MODE_METADATA_KEY, f"unknown feature mode {value!r} "
                                  f"(available: {', '.join(sorted(self.extractors))})")
                return value
        return self.default_mode

    @staticmethod
    def trim_of(context: grpc.aio.ServicerContext) -> int:
        """The look-ahead trim the call asks for (`x-feature-trim`), 0 without one."""
        for key, value in context.invocation_metadata() or ():
            if key == TRIM_METADATA_KEY:
                if not (value.isascii() and value.isdigit()) or int(value) > MAX_TRIM:
                    raise invalid(TRIM_METADATA_KEY, f"look-ahead trim {value[:16]!r}: must be "
                                  f"a whole number of rows from 0 to {MAX_TRIM}")
                return int(value)
        return 0

    @rejects_bad_streams("extract.rejected", log)
    async def Extract(self, request_iterator: AsyncIterator[common_pb2.AudioChunk],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[common_pb2.FeatureFrame]:
        mode = self.mode_of(context)
        extractor = self.extractors[mode]
        trim = self.trim_of(context)
        stream = extractor.start_stream(trim)
        cursor = ChunkCursor(self.max_stream_seconds)
        levels = LevelMeter()
        pending: list[np.ndarray] = []
        loop = asyncio.get_running_loop()
        log.info("extract.start", mode=mode, trim=trim)
        async for chunk in request_iterator:
            samples = cursor.accept(chunk)
            levels.push(samples)
            pending.append(samples)
            if cursor.position >= stream.samples_wanted():
                batch = np.concatenate(pending)
                pending.clear()
                started = time.perf_counter()
                frames = await loop.run_in_executor(self.executor, stream.push, batch)
                metrics.observe_push(mode, len(batch), time.perf_counter() - started,
                                     len(frames))
                for message in self._messages(frames, mode, levels):
                    yield message
        levels.finish()
        rest = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        started = time.perf_counter()
        frames = await loop.run_in_executor(self.executor, _push_and_finish, stream, rest)
        metrics.observe_push(mode, len(rest), time.perf_counter() - started, len(frames))
        for message in self._messages(frames, mode, levels):
            yield message
        log.info("extract.done", mode=mode, samples=cursor.position, chunks=cursor.count)

    @staticmethod
    def _messages(frames: list[Frame], mode: str, levels: LevelMeter) -> list[common_pb2.FeatureFrame]:
        return [feature_frame(i, x, mode, levels.pop(i)) for i, x in frames]

    async def ListModes(
        self, request: audio_features_pb2.ListModesRequest, context: grpc.aio.ServicerContext
    ) -> audio_features_pb2.ListModesResponse:
        modes = [mode_message(name, ex, name == self.default_mode)
                 for name, ex in sorted(self.extractors.items())]
        return audio_features_pb2.ListModesResponse(modes=modes)


def _push_and_finish(stream: FeatureStream, rest: np.ndarray) -> list[Frame]:
    return stream.push(rest) + stream.finish()
