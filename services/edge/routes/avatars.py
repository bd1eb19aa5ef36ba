"""Avatars: the list the renderer serves and each one's still frame."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

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
