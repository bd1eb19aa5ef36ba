"""Each of the edge's routers mounted alone on a bare FastAPI app.

The runtime is the real EdgeRuntime (sessions, metrics, debug config, input checks); only its
`Downstream` (the gRPC clients) is a small in-process stand-in, so no server is started. What
is checked is each router's own contract: statuses, bodies, headers, and that the JSON body
rules and error handlers travel with the router."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from services.edge.clients import AvatarMeta, VoiceMeta
from services.edge.errors import unknown
from services.edge.routes import avatars, debug, generation, health, live, page, sessions, tts
from services.edge.routes.error_responses import install_error_handlers
from services.edge.runtime import EdgeRuntime
from synctalk.config import Settings

STILL = b"\xff\xd8still-jpeg"
AVATAR = AvatarMeta(name="may", width=64, height=48, num_frames=10, fps=25.0,
                    feature_modes=("wenet",), still_jpeg=STILL)
VOICE = VoiceMeta(id="en-1", engine="piper", language="en", is_default=True)


class _Chunk:
    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm


class _Synthesize:
    """TTS.Synthesize as the stub returns it: an async iterator of chunks."""

    def __init__(self, requests: Iterator[Any], pcm: bytes) -> None:
        self.requests = list(requests)
        self.pcm = pcm

    async def __aiter__(self) -> AsyncIterator[_Chunk]:
        for start in range(0, len(self.pcm), 640):
            yield _Chunk(self.pcm[start:start + 640])


class _Downstream:
    """The gRPC clients' answers, without the servers: one avatar, one voice."""

    def __init__(self, health: dict[str, str] | None = None) -> None:
        self._health = health or {"tts": "ok", "audio_features": "ok", "renderer": "ok"}
        self.tts = SimpleNamespace(Synthesize=self._synthesize)
        self.calls: list[_Synthesize] = []

    def _synthesize(self, requests: Iterator[Any], timeout: float) -> _Synthesize:
        call = _Synthesize(requests, b"\x01\x00" * 8000)  # 0.5 s at 16 kHz
        self.calls.append(call)
        return call

    async def health(self) -> dict[str, str]:
        return self._health

    async def close(self) -> None:
        pass

    async def avatar(self, name: str) -> AvatarMeta:
        if name not in ("", AVATAR.name):
            raise unknown("avatar", name)
        return AVATAR

    async def avatar_list(self) -> list[AvatarMeta]:
        return [AVATAR]

    async def resolve_avatar_name(self, name: str) -> str:
        return name or AVATAR.name

    async def voices(self) -> list[VoiceMeta]:
        return [VOICE]

    async def voice(self, voice_id: str) -> VoiceMeta:
        if voice_id not in ("", VOICE.id):
            raise unknown("voice", voice_id)
        return VOICE


def _client(router_module: ModuleType, runtime: EdgeRuntime, listen_host: str = "127.0.0.1"
            ) -> TestClient:
    """`router_module.router` alone on a bare app, with the edge's error handlers."""
    app = FastAPI()
    app.state.runtime = runtime
    app.state.listen_host = listen_host
    install_error_handlers(app)
    app.include_router(router_module.router)
    return TestClient(app)


@pytest.fixture
def runtime() -> EdgeRuntime:
    return EdgeRuntime(Settings(), downstream=_Downstream())  # type: ignore[arg-type]


def test_health_reports_degraded_when_a_service_is_down_and_metrics_render() -> None:
    rt = EdgeRuntime(Settings(), downstream=_Downstream(  # type: ignore[arg-type]
        {"tts": "ok", "renderer": "unavailable"}))
    client = _client(health, rt)
    body = client.get("/health").json()
    assert body == {"status": "degraded", "services": {
        "edge": "ok", "tts": "ok", "renderer": "unavailable"},
        "active_sessions": 0, "max_sessions": rt.settings.services.max_sessions}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "synctalk_edge_active_sessions 0.0" in metrics.text


def test_avatar_routes_serve_the_still_and_the_list_and_404_an_unknown_name(
        runtime: EdgeRuntime) -> None:
    client = _client(avatars, runtime)
    still = client.get("/avatar")
    assert still.content == STILL and still.headers["x-avatar"] == "may"
    assert still.headers["content-type"] == "image/jpeg"
    missing = client.get("/avatar", params={"avatar": "nobody"})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    assert client.get("/avatar", params={"avatar": "x" * 65}).status_code == 422
    listed = client.get("/avatars").json()
    assert listed["default"] == "may" and listed["avatars"][0]["feature_modes"] == ["wenet"]


def test_tts_routes_list_voices_and_return_a_wav_with_its_duration(runtime: EdgeRuntime) -> None:
    client = _client(tts, runtime)
    assert client.get("/voices").json() == {"voices": [
        {"id": "en-1", "engine": "piper", "language": "en", "default": True}]}
    reply = client.get("/get-tts-audio", params={"text": "hello"})
    assert reply.status_code == 200 and reply.headers["x-audio-duration"] == "0.500"
    with wave.open(io.BytesIO(reply.content)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (16000, 1, 8000)
    sent = runtime.downstream.calls[0].requests  # type: ignore[attr-defined]
    assert sent[0].config.voice == "en-1" and sent[1].text == b"hello"
    assert client.get("/get-tts-audio", params={"text": "  "}).status_code == 422
    assert client.get("/get-tts-audio", params={"text": "hi", "voice": "zz"}).status_code == 404


def test_session_routes_cancel_report_stats_and_404_unknown_sessions(
        runtime: EdgeRuntime) -> None:
    client = _client(sessions, runtime)
    session = runtime.sessions.create("http")
    assert client.post(f"/sessions/{session.id}/cancel").json() == {
        "session_id": session.id, "cancelled": False}
    assert client.post("/sessions/nope/cancel").status_code == 404
    ok = client.post(f"/sessions/{session.id}/stats", json={"fps": 24.5, "dropped_frames": 3})
    assert ok.status_code == 204
    assert "synctalk_edge_player_dropped_frames_total 3.0" in runtime.metrics.render().decode()
    assert client.post(f"/sessions/{session.id}/stats", json={"fps": -1}).status_code == 422
    nan = client.post(f"/sessions/{session.id}/stats", content=b'{"fps": 1, "extra": NaN}',
                      headers={"Content-Type": "application/json"})
    assert nan.status_code == 422  # the strict JSON route class travels with the router
    missing = client.get(f"/result/{session.id}.mp4")
    assert missing.status_code == 404 and "no result" in missing.json()["detail"]


def test_debug_routes_are_off_by_default_and_guarded_off_loopback(
        runtime: EdgeRuntime, tmp_path: Path) -> None:
    client = _client(debug, runtime)
    assert client.get("/debug/status").status_code == 404
    # The body is parsed before the guard runs, as before the routes moved: a bad body is 422.
    assert client.post("/debug/config", json={"bogus": 1}).status_code == 422
    runtime.debug = runtime.debug.model_copy(update={
        "endpoints": True, "frames_dir": str(tmp_path / "frames")})
    assert client.get("/debug/status").status_code == 200
    assert _client(debug, runtime, listen_host="0.0.0.0").get("/debug/status").status_code == 403
    assert _client(debug, runtime, listen_host="").get("/debug/status").status_code == 403
    changed = client.post("/debug/config", json={"enabled": True, "save_frames": True})
    assert changed.status_code == 200 and changed.json()["save_frames"] is True
    assert (tmp_path / "frames").is_dir()
    runtime.debug = runtime.debug.model_copy(update={"token": "s3cret"})
    remote = _client(debug, runtime, listen_host="0.0.0.0")
    assert remote.get("/debug/status").status_code == 403
    assert remote.get("/debug/status", headers={"X-Debug-Token": "s3cret"}).status_code == 200


def test_generation_routes_refuse_bad_input_before_any_session_opens(
        runtime: EdgeRuntime) -> None:
    client = _client(generation, runtime)
    assert client.get("/generate", params={"text": " "}).status_code == 422
    assert client.get("/generate", params={"text": "hi", "session_id": "nope"}).status_code == 404
    assert runtime.sessions.active == 0
    still = client.get("/generate-from-audio")
    assert still.headers["content-type"].startswith("multipart/x-mixed-replace")
    assert STILL in still.content
    wrong = client.post("/generate-from-audio", content=b"not audio",
                        headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415 and runtime.sessions.active == 0


def test_page_router_serves_the_page(runtime: EdgeRuntime) -> None:
    reply = _client(page, runtime).get("/")
    assert reply.status_code == 200 and "<html" in reply.text.lower()
    assert reply.headers["cache-control"] == "no-cache"


def test_live_router_closes_a_foreign_origin_with_1008(runtime: EdgeRuntime) -> None:
    client = _client(live, runtime)
    with client.websocket_connect("/live", headers={"Origin": "https://evil.example"}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
    assert closed.value.code == 1008 and "evil.example" in closed.value.reason
    assert runtime.sessions.active == 0
