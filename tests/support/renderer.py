"""Renderer gRPC request builders, and a real renderer server on 127.0.0.1 for one test body."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from services.renderer.server import build_server, build_servicer
from services.renderer.servicer import RendererServicer
from synctalk.config import Settings, load_settings
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2, renderer_pb2_grpc

Stub = renderer_pb2_grpc.RendererStub


def settings(store: Path, **renderer: Any) -> Settings:
    """CPU settings over the avatar folder `store`, with `renderer` section overrides."""
    return load_settings(models={"device": "cpu", "avatars_dir": str(store)},
                         server={"drain_grace_s": 1.0}, renderer=renderer)


def run_with_server(
    body: Callable[[Stub, grpc.aio.Channel, RendererServicer], Awaitable[Any]], cfg: Settings
) -> Any:
    """Start a renderer on a free port, run `body` against it, drain it, return its result."""
    async def main() -> Any:
        servicer = build_servicer(cfg)
        server = build_server(cfg, "127.0.0.1", 0, servicer)
        await server.start()
        try:
            async with dial(server.address) as channel:
                return await body(Stub(channel), channel, servicer)
        finally:
            await server.drain_and_stop()
            await servicer.close()

    return asyncio.run(main())


def config(avatar: str = "tiny", **options: Any) -> renderer_pb2.RenderRequest:
    return renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=avatar, **options))


def feature_request(i: int, window: np.ndarray, rms: float = 0.0, voiced: bool = False,
                    **overrides: Any) -> renderer_pb2.RenderRequest:
    tensor = {"data": np.ascontiguousarray(window, "<f4").tobytes(), "shape": list(window.shape),
              "dtype": common_pb2.DTYPE_FLOAT32, **overrides.pop("tensor", {})}
    frame = common_pb2.FeatureFrame(index=i, pts_ms=40 * i, features=common_pb2.Tensor(**tensor),
                                    mode="ave", rms=rms, voiced=voiced)
    for key, value in overrides.items():
        setattr(frame, key, value)
    return renderer_pb2.RenderRequest(frame=frame)
