"""Avatars: the list the renderer serves, each one's still frame and its idle loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import Response, StreamingResponse

from services.edge import stream_format
from services.edge.idle_loops import IdleLoop
from services.edge.routes.deps import AvatarQuery, Runtime, new_router

router = new_router()


@router.get("/avatar", summary="The avatar's still frame (JPEG)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def avatar_still(rt: Runtime, avatar: AvatarQuery = "") -> Response:
    meta = await rt.avatar(avatar)
    return Response(meta.still_jpeg, media_type="image/jpeg",
                    headers={"Cache-Control": "max-age=60", "X-Avatar": meta.name})


@router.get("/avatars", summary="Avatars the renderer serves")
async def avatars(rt: Runtime) -> dict[str, Any]:
    listed = await rt.downstream.avatar_list()
    return {
        "default": await rt.downstream.resolve_avatar_name(""),
        "avatars": [{"name": a.name, "width": a.width, "height": a.height,
                     "num_frames": a.num_frames, "fps": a.fps,
                     "feature_modes": list(a.feature_modes)} for a in listed],
    }


@router.get("/idle", summary="The avatar's idle loop: what a player shows between utterances",
            description="The avatar's recorded head motion with the mouth closed, one loop of "
                        "JPEG frames as an av stream (docs/api-reference.md): a `start` "
                        "message (`loop_frames`, `loop_sources`), one `frame` per loop "
                        "position without audio, each with `source_frame` and `next_start` "
                        "(pass it as `start_frame` to the next generation so speech goes on "
                        "from the frame shown), then `end`. Drawn by the U-Net once per "
                        "avatar and then served from caches: replaying it costs nothing.",
            responses={200: {"content": {stream_format.MEDIA_TYPE: {}}}})
async def idle_loop(
    rt: Runtime, avatar: AvatarQuery = "",
    jpeg_quality: Annotated[int, Query(ge=0, le=100, description="1..100; 0 = the renderer's "
                                       "default (85): lower it to fetch a smaller loop")] = 0,
) -> Response:
    meta = await rt.avatar(avatar)
    loop = await rt.idle_loops.get(meta, quality=jpeg_quality)
    return StreamingResponse(_loop_messages(loop), media_type=stream_format.MEDIA_TYPE,
                             headers={"Cache-Control": "private, max-age=60",
                                      "X-Avatar": meta.name})


def _loop_messages(loop: IdleLoop) -> Iterator[bytes]:
    first = loop.frames[0]
    yield stream_format.message({
        "type": "start", "avatar": loop.avatar, "width": first.width, "height": first.height,
        "fps": 25, "loop_frames": loop.shape.length, "loop_sources": loop.shape.sources})
    for k, frame in enumerate(loop.frames):
        yield stream_format.message({
            "type": "frame", "index": k, "pts_ms": 40 * k, "image_bytes": len(frame.data),
            "audio_bytes": 0, "source_frame": frame.source_frame, "idle": True,
            "next_start": loop.shape.start_after(k)}, frame.data)
    yield stream_format.message({"type": "end", "status": "complete",
                                 "frames": loop.shape.length})
