"""The edge's copies of the renderer's idle loops (Renderer.IdleLoop), for the page (GET /idle)
and for Animate calls that idle between utterances.

A loop is fetched once per avatar, feature mode, encoding and quality and kept `ttl_s`, so a
retrained avatar's new loop shows up soon while idling sessions cost the renderer nothing;
concurrent first requests share one fetch. Loops are kept up to `max_bytes` in all.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import grpc

from services.edge.clients import RENDERER, AvatarMeta, Downstream
from services.edge.errors import EdgeError, from_rpc, unknown
from synctalk.log import get_logger
from synctalk.render.idle_loop import IdleLoopShape
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2

TTL_S = 60.0
MAX_BYTES = 256 * 1024**2
FETCH_TIMEOUT_S = 120.0  # a first drawing on a CPU renderer: a few hundred U-Net frames

log = get_logger("services.edge.idle")


@dataclass(frozen=True)
class IdleLoop:
    """One avatar's loop: frames by loop position, and the geometry they follow."""

    avatar: str
    frames: tuple[common_pb2.VideoFrame, ...]
    shape: IdleLoopShape

    @property
    def nbytes(self) -> int:
        return sum(len(f.data) for f in self.frames)

    @classmethod
    def of(cls, avatar: str, frames: list[common_pb2.VideoFrame]) -> IdleLoop:
        """The loop the renderer sent; its shape follows from the sources it walks."""
        if not frames:
            raise ValueError("the renderer sent an empty idle loop")
        sources = max(f.source_frame for f in frames) + 1
        shape = IdleLoopShape(sources, max(2, 2 * (sources - 1)))
        if shape.length != len(frames) or any(
                f.source_frame != shape.source(k) for k, f in enumerate(frames)):
            raise ValueError("the renderer's idle loop does not walk its frames forward and back")
        return cls(avatar, tuple(frames), shape)


class IdleLoops:
    def __init__(self, downstream: Downstream, ttl_s: float = TTL_S,
                 max_bytes: int = MAX_BYTES) -> None:
        self.downstream = downstream
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._loops: OrderedDict[tuple[str, str, int, int], tuple[float, IdleLoop]] = OrderedDict()
        self._fetching: dict[tuple[str, str, int, int], asyncio.Task[IdleLoop]] = {}

    async def get(self, avatar: AvatarMeta, encoding: int = common_pb2.IMAGE_ENCODING_JPEG,
                  quality: int = 0) -> IdleLoop:
        """The avatar's loop; 404 for an avatar the renderer lacks, the renderer's failure
        (naming it) otherwise."""
        mode = self.downstream.feature_mode_for(avatar)
        key = (avatar.name, mode, encoding, quality)
        now = time.monotonic()
        kept = self._loops.get(key)
        if kept is not None and kept[0] > now:
            self._loops.move_to_end(key)
            return kept[1]
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key))
            self._fetching[key] = task
        return await asyncio.shield(task)

    async def _fetch(self, key: tuple[str, str, int, int]) -> IdleLoop:
        name, mode, encoding, quality = key
        request = renderer_pb2.IdleLoopRequest(avatar=name, feature_mode=mode, encoding=encoding,
                                               jpeg_quality=quality)
        try:
            call = self.downstream.renderer.IdleLoop(request, timeout=FETCH_TIMEOUT_S)
            frames = [frame async for frame in call]
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise unknown("avatar", name) from None
            raise from_rpc(RENDERER, err) from None
        finally:
            self._fetching.pop(key, None)
        try:
            loop = IdleLoop.of(name, frames)
        except ValueError as err:
            raise EdgeError(502, grpc.StatusCode.INTERNAL, f"{RENDERER}: {err}",
                            service=RENDERER) from None
        self._keep(key, loop)
        log.info("idle.loop_fetched", avatar=name, mode=mode, frames=len(frames),
                 bytes=loop.nbytes)
        return loop

    def _keep(self, key: tuple[str, str, int, int], loop: IdleLoop) -> None:
        self._loops.pop(key, None)
        self._loops[key] = (time.monotonic() + self.ttl_s, loop)
        while sum(kept.nbytes for _, kept in self._loops.values()) > self.max_bytes \
                and self._loops:
            self._loops.popitem(last=False)
