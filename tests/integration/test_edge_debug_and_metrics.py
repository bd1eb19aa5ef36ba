"""The edge's debug dumps, debug-endpoint guards, CORS and metrics, against a real stack on
127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import soundfile as sf

from tests.support.audio import tone_pcm, wav_bytes
from tests.support.http import assert_clean_error, upload
from tests.support.stack import Edge, Stack


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge(debug={"endpoints": True})


def test_debug_config_dumps_frames_and_audio(stack: Stack, client: httpx.Client) -> None:
    status = client.get("/debug/status").json()
    assert status["enabled"] is False
    assert set(status) == {"enabled", "save_frames", "save_audio", "frames_dir", "audio_dir"}
    assert client.post("/debug/config", json={"enabled": True, "bogus": 1}).status_code == 422
    changed = client.post("/debug/config",
                          json={"enabled": True, "save_frames": True, "save_audio": True})
    assert changed.status_code == 200 and changed.json()["save_frames"] is True
    try:
        pcm = tone_pcm(0.4)
        reply = upload(client, wav_bytes(pcm), format="av")
        session = reply.headers["x-session-id"]
    finally:
        client.post("/debug/config", json={"enabled": False, "save_frames": False,
                                           "save_audio": False})
    frames_dir = Path(status["frames_dir"]) / session
    assert sorted(p.name for p in frames_dir.iterdir()) == [f"{i:06d}.jpg" for i in range(10)]
    audio, rate = sf.read(Path(status["audio_dir"]) / f"{session}.wav", dtype="int16")
    assert rate == 16000 and audio.tobytes() == pcm
    assert client.get("/debug/status").json()["enabled"] is False


def test_debug_token_guards_the_debug_settings(stack: Stack) -> None:
    edge = stack.edge(debug={"endpoints": True, "token": "s3cret"})
    with edge.client() as c:
        refused = c.post("/debug/config", json={"enabled": True})
        assert_clean_error(refused, 403, "X-Debug-Token")
        assert_clean_error(c.get("/debug/status"), 403, "X-Debug-Token")
        wrong = c.post("/debug/config", json={"enabled": True}, headers={"X-Debug-Token": "s3"})
        assert_clean_error(wrong, 403, "X-Debug-Token")
        allowed = c.post("/debug/config", json={"enabled": True},
                         headers={"X-Debug-Token": "s3cret"})
        assert allowed.status_code == 200 and allowed.json()["enabled"] is True
        status = c.get("/debug/status", headers={"X-Debug-Token": "s3cret"})
        assert status.status_code == 200 and "token" not in status.json()


def test_debug_endpoints_are_off_unless_config_enables_them(stack: Stack) -> None:
    edge = stack.edge()
    with edge.client() as c:
        assert_clean_error(c.get("/debug/status"), 404, "debug.endpoints")
        assert_clean_error(c.post("/debug/config", json={"enabled": True}), 404,
                           "debug.endpoints")
    assert edge.server.runtime.debug.enabled is False


@pytest.mark.parametrize("token", ["", "s3cret"])
def test_off_loopback_the_debug_endpoints_need_a_token(stack: Stack, token: str) -> None:
    """The app as it runs on 0.0.0.0 (driven in-process: nothing listens off loopback)."""
    from services.edge.app import create_app
    from services.edge.runtime import EdgeRuntime

    settings = stack.edge_settings(debug={"endpoints": True, "token": token})

    async def calls() -> list[httpx.Response]:
        """The app is built inside the loop: its gRPC channels bind to the running loop."""
        runtime = EdgeRuntime(settings)
        app = create_app(settings, runtime, host="0.0.0.0")
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://edge") as c:
                return [await c.get("/debug/status"),
                        await c.get("/debug/status", headers={"X-Debug-Token": "s3cret"})]
        finally:
            await runtime.close()

    without, with_token = stack.loop.run(calls())
    if token:
        assert_clean_error(without, 403, "X-Debug-Token")
        assert with_token.status_code == 200
    else:
        assert_clean_error(without, 403, "non-loopback")
        assert_clean_error(with_token, 403, "non-loopback")


def test_cors_is_closed_unless_origins_are_configured(stack: Stack) -> None:
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    with stack.edge().client() as c:
        reply = c.get("/health", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in reply.headers
        assert "access-control-allow-origin" not in c.options("/generate", headers=preflight).headers
    with stack.edge(cors_origins=["http://app.example"]).client() as c:
        allowed = c.get("/health", headers={"Origin": "http://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        other = c.get("/health", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


def test_metrics_count_frames_and_first_frame_time(client: httpx.Client) -> None:
    upload(client, wav_bytes(tone_pcm(0.4)), format="av")
    text = client.get("/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['synctalk_edge_frames_total{input="audio"}'] >= 10
    assert values['synctalk_edge_time_to_first_frame_seconds_count{input="audio"}'] >= 1
    assert values["synctalk_edge_frame_latency_seconds_count"] >= 10
    assert "synctalk_edge_active_sessions" in values
    assert "synctalk_edge_player_av_offset_seconds_count" in values
    assert "synctalk_edge_fallbacks" in text


def test_player_stats_feed_metrics(client: httpx.Client) -> None:
    reply = upload(client, wav_bytes(tone_pcm(0.2)), format="av")
    session = reply.headers["x-session-id"]
    posted = client.post(f"/sessions/{session}/stats",
                         json={"av_offset_ms": 12.5, "fps": 25.0, "dropped_frames": 1})
    assert posted.status_code == 204
    text = client.get("/metrics").text
    assert 'synctalk_edge_player_av_offset_seconds_bucket{le="0.02"} 1.0' in text
    assert 'synctalk_edge_player_av_offset_seconds_bucket{le="0.01"} 0.0' in text
    assert "synctalk_edge_player_dropped_frames_total 1.0" in text
