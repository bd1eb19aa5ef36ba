"""lipsync.v1.Renderer: feature frames in, lip-synced avatar frames out.

Each Render call runs two coroutines joined by a bounded queue. The reader validates every
FeatureFrame, plans it (ping-pong source frame, silence rule) and submits it to the shared
`MicroBatcher`, which batches frames of all streams for the U-Net; it then queues the
frame's future. The writer (the handler itself) awaits the futures in order, encodes each
image in a thread (host path; the resident pipeline returns bytes encoded in the batch) and
yields it. A slow reader of the responses stops the writer, the queue
stays full, the reader stops reading requests, and gRPC flow control stops the client: a
stream holds at most `INFLIGHT_PER_BATCH * render_batch_size` frames submitted but not yet
handed to the transport (a slot is taken before a frame is submitted and given back once
its VideoFrame has been written). When a call
ends for any reason (done, error, cancellation, deadline) its queued futures are cancelled,
so the batcher drops them and no further batch work is done for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import torch

from services.renderer import metrics
from services.renderer.avatars import AvatarStore
from services.renderer.requests import (
    WIRE_ENCODING,
    FrameChecker,
    RenderOptions,
    parse_config,
)
from synctalk.log import get_logger
from synctalk.render.batcher import MicroBatcher
from synctalk.render.device_frames import AvatarTooLarge
from synctalk.render.encode import encode
from synctalk.render.idle import silence_window
from synctalk.render.pipeline import FrameJob, FramePipeline, RenderModel, StreamPlan
from synctalk.render.resident import EncodedFrame, ResidentPipeline
from synctalk.rpc.errors import RpcError, abort, exhausted, invalid
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2, renderer_pb2_grpc

FRAME_MS = 40
INFLIGHT_PER_BATCH = 2  # queued frames per stream, in batches of render_batch_size
# Before a non-OK status, read what the client is still sending for up to this long: a
# grpc.aio client whose write fails after the status arrived reports INTERNAL instead of
# the server's code (grpc/grpc#36066).
ERROR_DRAIN_S = 0.5

log = get_logger("services.renderer")


class _End:
    """Marks the end of a stream's queue."""


_END = _End()


@dataclass(eq=False)
class RenderStream:
    """One Render call: its queue of frames in flight and counters (read by tests and logs)."""

    id: int
    avatar: str
    slots: asyncio.Semaphore  # frames this stream may have in flight
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    submitted: int = 0
    sent: int = 0
    closed: bool = False
    pending: set[asyncio.Future[Any]] = field(default_factory=set)
    model: RenderModel | None = None  # pinned on the device by a resident pipeline

    def close(self) -> None:
        """Cancel everything still in flight; the batcher skips cancelled items."""
        self.closed = True
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        while not self.queue.empty():
            self.queue.get_nowait()


class RendererServicer(renderer_pb2_grpc.RendererServicer):
    def __init__(
        self,
        store: AvatarStore,
        pipeline: FramePipeline | ResidentPipeline,
        encoder: Executor,
        *,
        batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        max_frames: int = 25 * 600,
        jpeg_quality: int = 85,
        default_mode: str = "ave",
        inflight_per_batch: int = INFLIGHT_PER_BATCH,
        batch_deadline_s: float = 0.0,
        name: str = "renderer",
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.resident = isinstance(pipeline, ResidentPipeline)
        self.encoder = encoder
        self.name = name  # how errors name this replica (host:port once bound)
        self._health: Callable[[bool], Awaitable[None]] | None = None
        pipeline.times.observer = metrics.observe_stage
        self.batcher: MicroBatcher[FrameJob, Any] = MicroBatcher(
            self._run_batch, max_batch=batch_size, max_wait_ms=batch_wait_ms,
            deadline_s=batch_deadline_s, stall_error=self._stall_error,
            on_health=self._set_health, on_batch=metrics.observe_batch)
        self.inflight = max(1, inflight_per_batch * batch_size)
        self.max_frames = max_frames
        self.jpeg_quality = jpeg_quality
        self.default_mode = default_mode
        self.active: dict[int, RenderStream] = {}
        self._ids = itertools.count()

    async def close(self) -> None:
        """Stop the batcher and the encode threads (after the server has drained)."""
        await self.batcher.close()
        if hasattr(self.encoder, "shutdown"):
            self.encoder.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.pipeline, ResidentPipeline):
            self.pipeline.close()

    def attach_health(self, set_status: Callable[[bool], Awaitable[None]], name: str) -> None:
        """Where a stalled batch reports NOT_SERVING (the server's health service)."""
        self._health = set_status
        self.name = name

    async def _set_health(self, healthy: bool) -> None:
        log.warning("render.health", serving=healthy, renderer=self.name)
        if self._health is not None:
            await self._health(healthy)

    def _stall_error(self, size: int, deadline_s: float) -> RpcError:
        return RpcError(grpc.StatusCode.UNAVAILABLE,
                        f"renderer {self.name} stalled: a batch of {size} frames ran past its "
                        f"{deadline_s:g} s deadline; retry on another renderer")

    def _run_batch(self, jobs: Sequence[FrameJob]) -> Sequence[Any]:
        """The pipeline on one batch (a worker thread): device errors become statuses."""
        try:
            if isinstance(self.pipeline, ResidentPipeline):
                out: Sequence[Any] = self.pipeline.render_encoded(jobs)
            else:
                out = self.pipeline.render(jobs)
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.error("render.out_of_memory", size=len(jobs), error=str(exc)[:200])
            raise exhausted("renderer out of GPU memory, retry") from exc
        except AvatarTooLarge as exc:
            raise exhausted(str(exc)) from exc
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.model.avatar.name] = counts.get(job.model.avatar.name, 0) + 1
        for avatar, n in counts.items():
            metrics.count_frames(avatar, n)
        if isinstance(self.pipeline, ResidentPipeline):
            metrics.RESIDENT_AVATAR_BYTES.set(self.pipeline.frames.bytes)
            if self.pipeline.on_gpu:
                metrics.update_gpu(self.pipeline.device)
        return out

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
            loop = asyncio.get_running_loop()
            while True:
                item = await stream.queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                index, source, idle, future = item
                image = await future
                stream.pending.discard(future)
                if isinstance(image, EncodedFrame):  # encoded on the device in its batch
                    data, width, height = image.data, image.width, image.height
                else:
                    started = time.perf_counter()
                    data = await loop.run_in_executor(
                        self.encoder, encode, image, options.encoding, options.jpeg_quality)
                    metrics.observe_stage("encode", time.perf_counter() - started)
                    width, height = image.shape[1], image.shape[0]
                stream.sent += 1
                yield common_pb2.VideoFrame(
                    index=index,
                    pts_ms=index * FRAME_MS,
                    encoding=WIRE_ENCODING[options.encoding],
                    data=data,
                    width=width,
                    height=height,
                    source_frame=source,
                    idle=idle,
                )
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
                if stream.model is not None and isinstance(self.pipeline, ResidentPipeline):
                    self.pipeline.release(stream.model)

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
                    if isinstance(self.pipeline, ResidentPipeline):
                        await self._pin(model, stream)
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
            stream.queue.put_nowait(_END)
        except Exception as exc:  # RpcError or a bug: the writer raises it in order
            stream.queue.put_nowait(exc)

    async def _pin(self, model: RenderModel, stream: RenderStream) -> None:
        """Put the avatar's frames on the device for this stream (refused when they cannot fit)."""
        assert isinstance(self.pipeline, ResidentPipeline)
        try:
            await asyncio.to_thread(self.pipeline.prepare, model)
        except AvatarTooLarge as exc:
            raise exhausted(str(exc)) from exc
        except torch.OutOfMemoryError as exc:
            raise exhausted("renderer out of GPU memory, retry") from exc
        stream.model = model
        metrics.RESIDENT_AVATAR_BYTES.set(self.pipeline.frames.bytes)

    async def ListAvatars(
        self, request: renderer_pb2.ListAvatarsRequest, context: grpc.aio.ServicerContext
    ) -> renderer_pb2.ListAvatarsResponse:
        infos = []
        for name in await asyncio.to_thread(self.store.names):
            try:
                avatar = await asyncio.to_thread(self.store.avatar, name)
            except RpcError as err:
                log.warning("avatar.unusable", avatar=name, reason=err.message)
                continue
            infos.append(avatar_info(name, avatar))
        return renderer_pb2.ListAvatarsResponse(avatars=infos)

    async def GetAvatar(
        self, request: renderer_pb2.GetAvatarRequest, context: grpc.aio.ServicerContext
    ) -> renderer_pb2.AvatarInfo:
        try:
            avatar = await asyncio.to_thread(self.store.avatar, request.name, "name")
            still = await asyncio.to_thread(self.store.still_jpeg, request.name, self.jpeg_quality)
        except RpcError as err:
            await abort(context, err)
        return avatar_info(request.name, avatar, still)


async def drain(requests: AsyncIterator[Any], limit_s: float) -> None:
    """Discard incoming messages until the client half-closes or `limit_s` passes."""

    async def consume() -> None:
        async for _ in requests:
            pass

    with contextlib.suppress(Exception):
        await asyncio.wait_for(consume(), limit_s)


def avatar_info(name: str, avatar: Any, still_jpeg: bytes = b"") -> renderer_pb2.AvatarInfo:
    """Metadata under the name clients render it by (its folder name)."""
    return renderer_pb2.AvatarInfo(
        name=name,
        width=avatar.width,
        height=avatar.height,
        num_frames=avatar.num_frames,
        fps=float(avatar.fps),
        feature_modes=avatar.feature_modes(),
        still_jpeg=still_jpeg,
    )
