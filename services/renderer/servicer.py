"""lipsync.v1.Renderer: feature frames in, lip-synced avatar frames out.

Each Render call runs two coroutines joined by a bounded queue. The reader validates every
FeatureFrame, plans it (ping-pong source frame, silence rule) and submits it to the shared
`MicroBatcher` (services/renderer/batches.py), which batches frames of all streams for the
U-Net; it then queues the frame's future. The writer (the handler itself) awaits the futures
in order, encodes each image in a thread (host path; the resident pipeline returns bytes
encoded in the batch) and yields it. A slow reader of the responses stops the writer, the
queue stays full, the reader stops reading requests, and gRPC flow control stops the client:
a stream holds at most `renderer.inflight_per_batch` batches of frames submitted but not yet
handed to the transport (a slot is taken before a frame is submitted and given back once
its VideoFrame has been written). When a call ends for any reason (done, error,
cancellation, deadline) its queued futures are cancelled, so the batcher drops them and no
further batch work is done for it. ListAvatars and GetAvatar live in catalog.py; IdleLoop
serves each avatar's idle loop, drawn once (idle_loops.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor

import grpc
import numpy as np

from services.renderer import metrics
from services.renderer.avatars import AvatarStore, checkpoint_stamp
from services.renderer.batches import BatchRunner
from services.renderer.catalog import AvatarCatalog
from services.renderer.idle_loops import IdleLoopCache, IdleLoopMaker
from services.renderer.requests import (
    FrameChecker,
    RenderOptions,
    parse_config,
    parse_idle_request,
)
from services.renderer.stream import END, RenderStream, drain, video_frame
from synctalk.config import RendererConfig
from synctalk.log import get_logger
from synctalk.render.idle import silence_window
from synctalk.render.pipeline import FramePipeline, StreamPlan
from synctalk.render.resident import ResidentPipeline
from synctalk.rpc.errors import RpcError, abort, invalid
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2

# Before a non-OK status, read what the client is still sending for up to this long: a
# grpc.aio client whose write fails after the status arrived reports INTERNAL instead of
# the server's code (grpc/grpc#36066).
ERROR_DRAIN_S = 0.5

log = get_logger("services.renderer")


class RendererServicer(AvatarCatalog):
    def __init__(self, store: AvatarStore, pipeline: FramePipeline | ResidentPipeline,
                 encoder: Executor, config: RendererConfig, *, default_mode: str) -> None:
        self.store = store
        self.pipeline = pipeline
        self.resident = isinstance(pipeline, ResidentPipeline)
        self.encoder = encoder
        self.runner = BatchRunner(pipeline, config)
        self.batcher = self.runner.batcher
        self.inflight = max(1, config.inflight_per_batch * self.batcher.max_batch)
        self.max_frames = config.max_frames
        self.jpeg_quality = config.jpeg_quality
        self.default_mode = default_mode
        self.active: dict[int, RenderStream] = {}
        self._ids = itertools.count()
        self.idle_loops = IdleLoopCache(config.idle_cache_mb * 1024**2)
        self.idle_maker = IdleLoopMaker(self.runner, encoder, config.idle_loop_frames)

    @property
    def name(self) -> str:
        """How errors name this replica (host:port once the server is bound)."""
        return self.runner.name

    def attach_health(self, set_status: Callable[[bool], Awaitable[None]], name: str) -> None:
        self.runner.attach_health(set_status, name)

    async def close(self) -> None:
        """Stop the batcher and the encode threads (after the server has drained)."""
        await self.runner.close()
        if hasattr(self.encoder, "shutdown"):
            self.encoder.shutdown(wait=False, cancel_futures=True)

    async def _silence(self, mode: str) -> np.ndarray | None:
        """The idle window for `mode`; None (idle frames keep their features) if the
        extractor cannot load here."""
        try:
            return await asyncio.to_thread(silence_window, mode, self.store.models)
        except Exception:
            log.exception("render.no_silence_window", mode=mode)
            return None

    async def Render(
        self,
        request_iterator: AsyncIterator[renderer_pb2.RenderRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[common_pb2.VideoFrame]:
        stream: RenderStream | None = None
        reader: asyncio.Task[None] | None = None
        try:
            first = await anext(aiter(request_iterator), None)
            options = parse_config(first, self.jpeg_quality)
            avatar = await asyncio.to_thread(self.store.avatar, options.avatar, "config.avatar")
            if options.start_frame >= avatar.num_frames:
                raise invalid("config.start_frame", f"expected 0..{avatar.num_frames - 1} "
                                                    f"(the avatar has {avatar.num_frames} frames), "
                                                    f"got {options.start_frame}")
            stream = RenderStream(next(self._ids), options.avatar,
                                  asyncio.Semaphore(self.inflight))
            self.active[stream.id] = stream
            metrics.ACTIVE_STREAMS.inc()
            log.info("render.start", avatar=options.avatar, encoding=options.encoding.value,
                     crop_only=options.crop_only, start_frame=options.start_frame)
            reader = asyncio.create_task(self._read(request_iterator, stream, options))
            while (item := await stream.queue.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                index, source, idle, future = item
                image = await future
                stream.pending.discard(future)
                frame = await video_frame(image, index, source, idle, options, self.encoder)
                stream.sent += 1
                yield frame
                stream.slots.release()
            log.info("render.done", frames=stream.sent)
        except RpcError as err:
            log.info("render.rejected", code=err.code.name, reason=err.message)
            if reader is not None:
                reader.cancel()
            await drain(request_iterator, ERROR_DRAIN_S)
            await abort(context, err)
        finally:
            if reader is not None:
                reader.cancel()
            if stream is not None:
                stream.close()
                if self.active.pop(stream.id, None) is not None:
                    metrics.ACTIVE_STREAMS.dec()
                if stream.model is not None:
                    self.runner.release(stream.model)

    async def IdleLoop(
        self, request: renderer_pb2.IdleLoopRequest, context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[common_pb2.VideoFrame]:
        try:
            options, mode = parse_idle_request(request, self.jpeg_quality, self.default_mode)
            model = await asyncio.to_thread(self.store.model, options.avatar, mode, "avatar")
            silence = await self._silence(mode)
            if silence is None:
                raise RpcError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"feature mode {mode!r}: no silence window here, so no idle loop")
            stamp = await asyncio.to_thread(checkpoint_stamp, model)
            key = (model.key, mode, stamp, options.encoding, options.jpeg_quality)
            frames, cached = await self.idle_loops.get(
                key, lambda: self.idle_maker.draw(model, silence, options))
        except RpcError as err:
            log.info("idle.rejected", code=err.code.name, reason=err.message)
            await abort(context, err)
        if cached:
            metrics.IDLE_LOOP_FRAMES.labels(avatar=options.avatar, served="cache").inc(len(frames))
        log.info("idle.loop_sent", avatar=options.avatar, mode=mode, frames=len(frames),
                 cached=cached)
        for frame in frames:
            yield frame

    async def _read(self, requests: AsyncIterator[renderer_pb2.RenderRequest],
                    stream: RenderStream, options: RenderOptions) -> None:
        """Validate, plan and submit every frame; errors go into the queue after the frames
        that came before them, so the client receives those first."""
        checker = FrameChecker(self.max_frames, self.default_mode)
        plan: StreamPlan | None = None
        try:
            async for request in requests:
                frame = checker.check(request)
                if plan is None:
                    model = await asyncio.to_thread(
                        self.store.model, options.avatar, frame.mode, "config.avatar")
                    if self.resident:
                        await asyncio.to_thread(self.runner.pin, model)
                        stream.model = model
                    plan = StreamPlan(model, options.start_frame, await self._silence(frame.mode),
                                      options.crop_only, options.encoding, options.jpeg_quality)
                job, idle = plan.job(frame.index, frame.features, frame.voiced, frame.rms)
                await stream.slots.acquire()
                if stream.closed:
                    return
                future = self.batcher.submit(job)
                stream.pending.add(future)
                stream.submitted += 1
                stream.queue.put_nowait((frame.index, job.source, idle, future))
            stream.queue.put_nowait(END)
        except Exception as exc:  # RpcError or a bug: the writer raises it in order
            stream.queue.put_nowait(exc)
