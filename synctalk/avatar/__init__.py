"""The avatar: its folder layout (`layout`, the one place that names its files), lazily
read frames, crop boxes, the source-frame walk, and its preparation from a video
(`synctalk prepare`).

The preparation names are imported on first use, so the renderer's `import synctalk.avatar`
does not pull in the decoder, tqdm and the landmark code.
"""

from __future__ import annotations

from typing import Any

from synctalk.avatar.format import Avatar, list_avatars, load_avatar
from synctalk.avatar.frames import JpegFrames, open_frames
from synctalk.avatar.layout import AvatarMeta, read_meta, valid_avatar_name, write_meta
from synctalk.avatar.walk import PingPong

_PREPARE = {"PrepareError", "PrepareOptions", "find_source_video", "prepare_avatar"}

__all__ = [
    "Avatar",
    "AvatarMeta",
    "JpegFrames",
    "PingPong",
    "PrepareError",
    "PrepareOptions",
    "find_source_video",
    "list_avatars",
    "load_avatar",
    "open_frames",
    "prepare_avatar",
    "read_meta",
    "valid_avatar_name",
    "write_meta",
]


def __getattr__(name: str) -> Any:
    if name in _PREPARE:
        from synctalk.avatar import prepare

        return getattr(prepare, name)
    raise AttributeError(f"module 'synctalk.avatar' has no attribute {name!r}")
