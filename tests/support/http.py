"""HTTP helpers for the edge: uploads, stream parsing and clean-error checks."""

from __future__ import annotations

import threading
import time

import httpx

from services.edge import stream_format
from tests.support.stack import Edge


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


def stream_in_background(edge: Edge, params: dict, body: bytes) -> tuple[threading.Thread, dict]:
    """Read a real-time paced upload stream on a thread; `out` gets its status and session
    id as soon as the response starts, then its body ("messages" for the sound stream)."""
    out: dict = {"messages": [], "body": b""}

    def run() -> None:
        with edge.client() as c:
            request = c.build_request(
                "POST", "/generate-from-audio", params=params,
                files={"audio_file": ("a.wav", body, "audio/wav")},
            )
            reply = c.send(request, stream=True)
            try:
                out["status"] = reply.status_code
                out["session"] = reply.headers.get("x-session-id")
                reader = stream_format.Reader()
                for chunk in reply.iter_bytes():
                    out["body"] += chunk
                    if params.get("format") == "av":
                        out["messages"].extend(reader.feed(chunk))
            finally:
                reply.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while "session" not in out and time.monotonic() < deadline:
        time.sleep(0.02)
    return thread, out


def metric_by_label(edge: Edge, prefix: str) -> dict[str, float]:
    """The edge's /metrics samples whose line starts with `prefix` (a metric name and the
    opening of its one label), by that label's value."""
    with edge.client() as client:
        text = client.get("/metrics").text
    return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


def active_sessions(edge: Edge) -> int:
    with edge.client() as client:
        return int(client.get("/health").json()["active_sessions"])


def wait_sessions(edge: Edge, n: int, timeout: float = 10, step_s: float = 0.05) -> None:
    """Wait until the edge holds `n` sessions; assert it."""
    deadline = time.monotonic() + timeout
    while active_sessions(edge) != n and time.monotonic() < deadline:
        time.sleep(step_s)
    assert active_sessions(edge) == n
