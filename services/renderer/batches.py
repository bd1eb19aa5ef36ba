"""The renderer's one `MicroBatcher` over its pipeline: frames of every stream run through the
U-Net together; device errors become gRPC statuses, and a batch that runs past its deadline
fails its streams UNAVAILABLE and turns the server's health NOT_SERVING until one completes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import torch

from services.renderer import metrics
from synctalk.config import RendererConfig
from synctalk.log import get_logger
from synctalk.render.batcher import MicroBatcher
from synctalk.render.device_frames import AvatarTooLarge
from synctalk.render.pipeline import FrameJob, FramePipeline, RenderModel
from synctalk.render.resident import ResidentPipeline
from synctalk.rpc.errors import RpcError, exhausted

log = get_logger("services.renderer")


class BatchRunner:
    """Batches for one pipeline, sized by `RendererConfig` for the host or the CUDA path."""

    def __init__(self, pipeline: FramePipeline | ResidentPipeline, config: RendererConfig,
                 name: str = "renderer") -> None:
        self.pipeline = pipeline
        self.resident = isinstance(pipeline, ResidentPipeline)
        self.name = name  # how errors name this replica (host:port once bound)
        self._health: Callable[[bool], Awaitable[None]] | None = None
        pipeline.times.observer = metrics.observe_stage
        batch_size, batch_wait_ms = config.batching(self.resident and pipeline.on_gpu)
        self.batcher: MicroBatcher[FrameJob, Any] = MicroBatcher(
            self._run, max_batch=batch_size, max_wait_ms=batch_wait_ms,
            deadline_s=config.batch_deadline_s, stall_error=self._stall_error,
            on_health=self._set_health, on_batch=metrics.observe_batch)

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

    def _run(self, jobs: Sequence[FrameJob]) -> Sequence[Any]:
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

    def pin(self, model: RenderModel) -> None:
        """Put the avatar's frames on the device (a worker thread); refused when they cannot fit."""
        assert isinstance(self.pipeline, ResidentPipeline)
        try:
            self.pipeline.prepare(model)
        except AvatarTooLarge as exc:
            raise exhausted(str(exc)) from exc
        except torch.OutOfMemoryError as exc:
            raise exhausted("renderer out of GPU memory, retry") from exc
        metrics.RESIDENT_AVATAR_BYTES.set(self.pipeline.frames.bytes)

    def release(self, model: RenderModel) -> None:
        """Unpin a stream's avatar (resident pipeline only)."""
        if isinstance(self.pipeline, ResidentPipeline):
            self.pipeline.release(model)

    async def close(self) -> None:
        await self.batcher.close()
        if isinstance(self.pipeline, ResidentPipeline):
            self.pipeline.close()
