"""HTTP helpers for the edge: uploads, stream parsing and clean-error checks."""

from __future__ import annotations

import httpx

from services.edge import stream_format


def frames_of(body: bytes) -> tuple[dict, list[tuple[dict, bytes]], dict]:
    messages = stream_format.parse(body)
    assert messages[0][0]["type"] == "start" and messages[-1][0]["type"] == "end"
    return messages[0][0], [m for m in messages[1:-1]], messages[-1][0]


def upload(client: httpx.Client, data: bytes, *, name: str = "a.wav", kind: str = "audio/wav",
           **params: str) -> httpx.Response:
    """POST /generate-from-audio; unpaced unless `realtime` is given."""
    return client.post("/generate-from-audio", params={"realtime": "false", **params},
                       files={"audio_file": (name, data, kind)})


def assert_clean_error(reply: httpx.Response, status: int, needle: str) -> None:
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["detail"] if isinstance(reply.json()["detail"], str) \
        else needle in str(reply.json()["detail"])
    assert "Traceback" not in reply.text and "File \"" not in reply.text
