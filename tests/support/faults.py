"""Helpers for the fault tests on the process stack: figures, health checks, uploads, logs."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import numpy as np

from services.edge import stream_format
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2_grpc
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.processes import (
    AVATAR,
    BACKENDS,
    AvStream,
    EdgeProcess,
    ServiceProcess,
    wait_until,
)
from tests.support.renderer import config as render_config
from tests.support.renderer import feature_request

FPS = 25


# Long enough that the killed service is still at work when it dies: TTS speaks sentence by
# sentence (a few times faster than real time here), audio_features runs at most a few
# hundred frames ahead of playback (gRPC flow control), the renderer runs to the end.
SPEECH = " ".join(f"This is sentence number {i} of a long answer the avatar gives." for i in range(12))


def figure(name: str, value: float, unit: str) -> None:
    """A measured figure, shown with `pytest -rA` (stdout of passed tests)."""
    print(f"FIGURE {name} = {value:.3f} {unit}")


def sees(edge: EdgeProcess, services: tuple[str, ...] = BACKENDS) -> bool:
    """Whether the edge's /health reports these services ok."""
    try:
        health = edge.health()
    except httpx.HTTPError:
        return False
    return all(health[name] == "ok" for name in services)


def warm_renderer(proc: ServiceProcess) -> None:
    """Load the avatar's U-Net on a (re)started replica, so timings do not include it."""
    window = np.zeros((32, 16, 16), np.float32)
    with grpc.insecure_channel(proc.address) as channel:
        frames = list(renderer_pb2_grpc.RendererStub(channel).Render(
            iter([render_config(AVATAR), feature_request(0, window)]), timeout=60))
    assert len(frames) == 1


def upload(seconds: float) -> dict[str, Any]:
    return {"files": {"audio_file": ("a.wav", wav_bytes(tone_pcm(seconds)), "audio/wav")}}


def long_session(edge: EdgeProcess, service: str, upload_s: float) -> AvStream:
    """A realtime session that keeps `service` busy for many seconds (text for tts, else an
    upload of `upload_s` seconds), returned once its first 5 frames are in: mid-stream."""
    if service == "tts":
        session = AvStream(edge, "/generate", json={"text": SPEECH})
    else:
        session = AvStream(edge, "/generate-from-audio", **upload(upload_s))
    session.wait_frames(5)
    return session


def assert_error_end(session: AvStream, service: str) -> None:
    """The session's stream ended (its end timed) with an error naming `service`."""
    assert session.end is not None and session.end_at is not None, session.summary()
    assert session.end["status"] == "error", session.summary()
    assert session.end["service"] == service, session.summary()


def short_generation(edge: EdgeProcess, service: str) -> httpx.Response:
    """A short generation as fast as it renders, through `service`."""
    params = {"format": "av", "realtime": "0"}
    with edge.client(timeout=60) as client:
        if service == "tts":
            return client.post("/generate", params=params, json={"text": "I am back."})
        return client.post("/generate-from-audio", params=params, **upload(0.4))


def end_of(reply: httpx.Response) -> dict[str, Any]:
    messages = stream_format.parse(reply.content)
    assert messages and messages[-1][0]["type"] == "end", reply.content[:200]
    return messages[-1][0]


def log_events(proc: ServiceProcess, event: str) -> list[dict[str, Any]]:
    """The process's JSON log records of `event`."""
    records = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [r for r in records if r.get("event") == event]


def replica_of(replicas: list[ServiceProcess], session_id: str) -> ServiceProcess:
    """The replica whose log shows the session's Render stream."""
    def find() -> ServiceProcess | None:
        for proc in replicas:
            if any(r.get("session_id") == session_id for r in log_events(proc, "stream.start")):
                return proc
        return None

    wait_until(find, 5, f"a replica to log session {session_id}")
    found = find()
    assert found is not None
    return found
