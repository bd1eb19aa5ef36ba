"""The Renderer's avatar queries (ListAvatars, GetAvatar): metadata from the `AvatarStore`,
apart from the streaming Render call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from services.renderer.avatars import AvatarStore
from synctalk.log import get_logger
from synctalk.rpc.errors import RpcError, abort
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2, renderer_pb2_grpc

log = get_logger("services.renderer")


class AvatarCatalog(renderer_pb2_grpc.RendererServicer):
    """ListAvatars and GetAvatar over `store`; the still is encoded at `jpeg_quality`."""

    store: AvatarStore
    jpeg_quality: int

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
