"""The edge's stream with sound: frames and their audio in one HTTP response body.

Media type `application/vnd.synctalk.av-stream`. The body is a sequence of messages, each

    u32 big-endian  length of the header          (H)
    H bytes         header, UTF-8 JSON object with a "type"
    u32 big-endian  length of the payload         (P)
    P bytes         payload

Types:
- "start" (first): session_id, avatar, width, height, fps (25), sample_rate (16000),
  samples_per_frame (640), lookahead_ms (the feature look-ahead, 320 in mode ave); no payload.
- "frame": index, pts_ms, image_bytes, audio_bytes, source_frame, idle; the payload is the
  JPEG (image_bytes long) followed by the frame's audio (audio_bytes = 1280: 640 samples,
  16 kHz mono s16le). A player plays the audio of frame i at pts_ms and shows its picture
  at the same moment.
- "end" (last): status "complete" | "interrupted" | "error", frames, result_url (the mp4
  of a complete utterance, or null), reason (interrupted), error and http_status (error).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

from services.edge.orchestrator import Frame

MEDIA_TYPE = "application/vnd.synctalk.av-stream"
_LEN = struct.Struct(">I")


def message(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return _LEN.pack(len(head)) + head + _LEN.pack(len(payload)) + payload


def frame_message(frame: Frame, extra: dict[str, Any] | None = None) -> bytes:
    """A "frame" message; `extra` adds header fields (the live socket's latency figures)."""
    return message(
        {
            "type": "frame",
            "index": frame.index,
            "pts_ms": frame.pts_ms,
            "image_bytes": len(frame.image),
            "audio_bytes": len(frame.audio),
            "source_frame": frame.source_frame,
            "idle": frame.idle,
            **(extra or {}),
        },
        frame.image + frame.audio,
    )


class Reader:
    """Incremental parser: feed bytes as they arrive, get (header, payload) messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[dict[str, Any], bytes]]:
        self._buf += data
        while True:
            if len(self._buf) < 4:
                return
            (head_len,) = _LEN.unpack_from(self._buf, 0)
            if len(self._buf) < 8 + head_len:
                return
            (body_len,) = _LEN.unpack_from(self._buf, 4 + head_len)
            end = 8 + head_len + body_len
            if len(self._buf) < end:
                return
            header = json.loads(self._buf[4 : 4 + head_len].decode("utf-8"))
            payload = bytes(self._buf[8 + head_len : end])
            del self._buf[:end]
            yield header, payload


def parse(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """Every message of a complete body."""
    return list(Reader().feed(body))
