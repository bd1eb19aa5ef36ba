"""The `/live` WebSocket protocol: limits, close codes, the config message, the input checks.

Every refusal and failure ends the socket with a close code and a reason: 1003 wrong kind of
message, 1007 bad config or PCM, 1008 origin/token/limits/flooding/not reading, 1009 message
too big, 1011 a backend failed, 1013 session cap or rate limit (docs/api-reference.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.edge.clients import AvatarMeta
from services.edge.errors import EdgeError
from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME

PATH = "/live"
MAX_MESSAGE_BYTES = 64 * 1024  # uvicorn refuses a larger WebSocket message with 1009
MAX_CHUNK_S = 0.5  # one binary message holds at most this much audio (else 1009)
FLOOD_FACTOR = 2.0  # input may run this much faster than real time ...
FLOOD_BURST_S = 2.0  # ... beyond a burst of this many seconds (else 1008)
PAUSE_S = 0.3  # no input this long: pad the look-ahead with silence
SEND_QUEUE_FRAMES = 25  # frames waiting for a client that does not read (then 1008)
CLOSE_TIMEOUT_S = 1.0
REASON_BYTES = 123  # the WebSocket limit on a close reason

# Close codes (RFC 6455 section 7.4.1).
NORMAL, GOING_AWAY, UNSUPPORTED, INVALID, POLICY, TOO_BIG, INTERNAL, TRY_LATER = (
    1000, 1001, 1003, 1007, 1008, 1009, 1011, 1013)


class LiveConfig(BaseModel):
    """The first message (text, JSON)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field("config", pattern="^config$")
    sample_rate: int = Field(SAMPLE_RATE, ge=8000, le=192_000)
    avatar: str = Field("", max_length=64)
    jpeg_quality: int = Field(0, ge=0, le=100)
    start_frame: int | None = Field(None, ge=0, le=2**31 - 1, description="Avatar source "
                                    "frame the first utterance starts at (GET /idle's "
                                    "`next_start` of the idle frame shown)")
    token: str = Field("", max_length=256, description="API token (off loopback), for "
                       "clients that cannot set headers on a WebSocket (browsers)")


class LiveClose(Exception):
    """End the socket with `code` and `reason`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def close_for(err: EdgeError) -> LiveClose:
    """The close code of an edge error: the client's fault, busy, or a backend's failure."""
    if err.http_status in (503,) and err.service == "edge":
        return LiveClose(TRY_LATER, err.message)
    if 400 <= err.http_status < 500:
        return LiveClose(INVALID, err.message)
    return LiveClose(INTERNAL, err.message)


def origin_allowed(headers: dict[str, str], cors_origins: list[str]) -> bool:
    """No Origin (not a browser), the edge's own origin, or a configured CORS origin."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin in cors_origins or "*" in cors_origins:
        return True
    host = headers.get("host", "")
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


class InputMeter:
    """Checks each binary message against the limits: 16-bit PCM, at most MAX_CHUNK_S per
    message, and no faster than FLOOD_FACTOR × real time beyond a FLOOD_BURST_S burst."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.received_s = 0.0  # client audio received, in seconds
        self.first_input: float | None = None

    def check(self, data: bytes, now: float) -> None:
        if len(data) % 2:
            raise LiveClose(INVALID, f"odd byte count {len(data)}: PCM is 16-bit")
        seconds = len(data) / 2 / self.sample_rate
        if seconds > MAX_CHUNK_S:
            raise LiveClose(TOO_BIG, f"a message holds {seconds:.2f} s of audio, the limit "
                                     f"is {MAX_CHUNK_S:g} s")
        if not data:
            return
        if self.first_input is None:
            self.first_input = now
        self.received_s += seconds
        if self.received_s > FLOOD_FACTOR * (now - self.first_input) + FLOOD_BURST_S:
            raise LiveClose(POLICY, f"input faster than real time: {self.received_s:.1f} s of "
                                    f"audio in {now - self.first_input:.1f} s")


def start_message(session_id: str, avatar: AvatarMeta, lookahead_frames: int,
                  max_lag_s: float, lookahead_trim: int) -> dict[str, Any]:
    """The sound stream's "start" message, marked live, with the lag budget and the
    look-ahead trim its features use."""
    return {
        "type": "start", "session_id": session_id, "avatar": avatar.name,
        "width": avatar.width, "height": avatar.height, "fps": 25,
        "sample_rate": SAMPLE_RATE, "samples_per_frame": SAMPLES_PER_FRAME,
        "lookahead_ms": 40 * lookahead_frames, "live": True,
        "max_lag_ms": round(max_lag_s * 1000), "lookahead_trim": lookahead_trim}


async def first_config(ws: WebSocket, timeout_s: float) -> LiveConfig:
    """The config message, or the close that refuses it."""
    try:
        message = await asyncio.wait_for(ws.receive(), timeout_s)
    except TimeoutError:
        raise LiveClose(POLICY, f"no config within {timeout_s:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise LiveClose(NORMAL, "closed before the config")
    text = message.get("text")
    if text is None:
        raise LiveClose(UNSUPPORTED, "the first message must be the JSON config (text)")
    try:
        return LiveConfig.model_validate(json.loads(text))
    except (ValueError, ValidationError) as err:
        detail = err.errors()[0] if isinstance(err, ValidationError) else None
        where = ".".join(str(p) for p in detail["loc"]) if detail else "config"
        why = detail["msg"] if detail else "not a JSON object"
        raise LiveClose(INVALID, f"config.{where}: {why}" if detail else
                        f"config: {why}") from None


async def close_socket(ws: WebSocket, code: int, reason: str) -> None:
    """Close with `reason` cut to the protocol's limit; a socket already gone is fine."""
    reason = reason.encode()[:REASON_BYTES].decode(errors="ignore")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT_S)
