"""The renderer's idle loops: each avatar's closed-mouth motion, rendered once and then served
from memory (the IdleLoop call; geometry in synctalk/render/idle_loop.py).

A loop is keyed by the U-Net that drew it (the model's key changes when the avatar or its
checkpoint is rewritten), the feature mode, the encoding and the JPEG quality. Concurrent
requests for a loop that is being drawn wait for that one drawing. Drawing goes through the
shared micro-batcher one batch at a time, so live streams' frames interleave with it and
are never stuck behind a whole loop. Loops are kept up to `renderer.idle_cache_mb` bytes,
least recently used first out.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Executor

import numpy as np

from services.renderer import metrics
from services.renderer.batches import BatchRunner
from services.renderer.requests import RenderOptions
from services.renderer.stream import video_frame
from synctalk.log import get_logger
from synctalk.render.idle_loop import IdleLoopShape
from synctalk.render.pipeline import FrameJob, RenderModel
from synctalk.rpc.gen.lipsync.v1 import common_pb2

log = get_logger("services.renderer.idle")

Loop = list[common_pb2.VideoFrame]


def loop_bytes(frames: Loop) -> int:
    return sum(len(f.data) for f in frames)


class IdleLoopCache:
    """Finished loops by key, bounded in bytes; one drawing per key at a time."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._loops: OrderedDict[Hashable, Loop] = OrderedDict()
        self._drawing: dict[Hashable, asyncio.Task[Loop]] = {}
        self.bytes = 0

    async def get(self, key: Hashable, draw: Callable[[], Awaitable[Loop]]) -> tuple[Loop, bool]:
        """(the loop, whether it came from the cache). A caller that goes away does not stop
        a drawing others may be waiting for."""
        loop = self._loops.get(key)
        if loop is not None:
            self._loops.move_to_end(key)
            return loop, True
        task = self._drawing.get(key)
        if task is None:
            task = asyncio.ensure_future(self._draw(key, draw))
            self._drawing[key] = task
        return await asyncio.shield(task), False

    async def _draw(self, key: Hashable, draw: Callable[[], Awaitable[Loop]]) -> Loop:
        try:
            loop = await draw()
        finally:
            self._drawing.pop(key, None)
        self._keep(key, loop)
        return loop

    def _keep(self, key: Hashable, loop: Loop) -> None:
        size = loop_bytes(loop)
        if size > self.max_bytes:
            log.warning("idle.loop_not_cached", bytes=size, limit=self.max_bytes)
            return
        self._loops[key] = loop
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._loops.popitem(last=False)
            self.bytes -= loop_bytes(old)


class IdleLoopMaker:
    """Draws an avatar's idle loop with the renderer's batcher and encoder."""

    def __init__(self, runner: BatchRunner, encoder: Executor, max_frames: int) -> None:
        self.runner = runner
        self.encoder = encoder
        self.max_frames = max_frames

    def shape(self, model: RenderModel) -> IdleLoopShape:
        return IdleLoopShape(model.num_frames, self.max_frames)

    async def draw(self, model: RenderModel, silence: np.ndarray, options: RenderOptions) -> Loop:
        shape = self.shape(model)
        batcher = self.runner.batcher
        step = max(1, batcher.max_batch)
        if self.runner.resident:
            await asyncio.to_thread(self.runner.pin, model)
        frames: Loop = []
        try:
            for lo in range(0, shape.length, step):
                positions = range(lo, min(lo + step, shape.length))
                jobs = [FrameJob(model, shape.source(k), silence, False, options.encoding,
                                 options.jpeg_quality) for k in positions]
                images = await asyncio.gather(*(batcher.submit(job) for job in jobs))
                for k, job, image in zip(positions, jobs, images, strict=True):
                    frames.append(await video_frame(image, k, job.source, True, options,
                                                    self.encoder))
        finally:
            if self.runner.resident:
                self.runner.release(model)
        log.info("idle.loop_drawn", avatar=model.avatar.name, mode=model.mode,
                 frames=len(frames), sources=shape.sources, bytes=loop_bytes(frames))
        metrics.IDLE_LOOP_FRAMES.labels(avatar=model.avatar.name, served="drawn").inc(len(frames))
        return frames
