"""One Render call's state and its frames on the wire: the queue of frames in flight between
the reader and the writer, and how each finished image becomes a VideoFrame."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from services.renderer import metrics
from services.renderer.requests import WIRE_ENCODING, RenderOptions
from synctalk.render.encode import encode
from synctalk.render.pipeline import RenderModel
from synctalk.render.resident import EncodedFrame
from synctalk.rpc.gen.lipsync.v1 import common_pb2

FRAME_MS = 40


class _End:
    """Marks the end of a stream's queue."""


END = _End()


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


async def video_frame(image: Any, index: int, source: int, idle: bool, options: RenderOptions,
                      encoder: Executor) -> common_pb2.VideoFrame:
    """The wire frame for one rendered image: encoded in `encoder` (host path), or as the
    resident pipeline already encoded it inside its batch."""
    if isinstance(image, EncodedFrame):
        data, width, height = image.data, image.width, image.height
    else:
        started = time.perf_counter()
        data = await asyncio.get_running_loop().run_in_executor(
            encoder, encode, image, options.encoding, options.jpeg_quality)
        metrics.observe_stage("encode", time.perf_counter() - started)
        width, height = image.shape[1], image.shape[0]
    return common_pb2.VideoFrame(
        index=index,
        pts_ms=index * FRAME_MS,
        encoding=WIRE_ENCODING[options.encoding],
        data=data,
        width=width,
        height=height,
        source_frame=source,
        idle=idle,
    )


async def drain(requests: AsyncIterator[Any], limit_s: float) -> None:
    """Discard incoming messages until the client half-closes or `limit_s` passes."""

    async def consume() -> None:
        async for _ in requests:
            pass

    with contextlib.suppress(Exception):
        await asyncio.wait_for(consume(), limit_s)
