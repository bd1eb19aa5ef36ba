"""The edge's HTTP API against a real stack on 127.0.0.1 (tts, audio_features, renderer,
edge under uvicorn): every endpoint, frames joined with their audio, MJPEG compatibility,
the mp4 result, debug dumps, metrics, barge-in, disconnects, limits and bad input."""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import soundfile as sf

from services.edge import mjpeg, stream_format
from synctalk.audio.decode import load_audio
from synctalk.audio.pcm import float_to_s16le
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.http import assert_clean_error, frames_of, upload
from tests.support.paths import free_port
from tests.support.stack import AVATAR, AVATAR_SIZE, Edge, Stack

TEXT = "Hello there. This is a short test."


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge(max_upload_bytes=400_000, max_upload_seconds=5.0,
                      debug={"endpoints": True})


@pytest.fixture(scope="module")
def client(edge: Edge) -> Iterator[httpx.Client]:
    with edge.client() as c:
        yield c


# -- streams ---------------------------------------------------------------------------------


def test_generate_with_sound_pairs_every_frame_with_its_audio(client: httpx.Client) -> None:
    reply = client.get("/generate", params={"text": TEXT, "format": "av", "realtime": "false"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == stream_format.MEDIA_TYPE
    start, frames, end = frames_of(reply.content)
    assert start["session_id"] == reply.headers["x-session-id"]
    assert (start["width"], start["height"]) == AVATAR_SIZE
    assert (start["fps"], start["sample_rate"], start["samples_per_frame"]) == (25, 16000, 640)
    assert [h["index"] for h, _ in frames] == list(range(len(frames)))
    assert [h["pts_ms"] for h, _ in frames] == [40 * i for i in range(len(frames))]
    assert {h["audio_bytes"] for h, _ in frames} == {1280}
    assert len(frames) > 25  # more than a second of speech
    image = cv2.imdecode(np.frombuffer(frames[3][1][: frames[3][0]["image_bytes"]], np.uint8),
                         cv2.IMREAD_COLOR)
    assert image.shape == (AVATAR_SIZE[1], AVATAR_SIZE[0], 3)
    audio = np.frombuffer(b"".join(p[h["image_bytes"]:] for h, p in frames), "<i2")
    assert np.abs(audio).max() > 2000  # speech, not silence
    assert end == {"type": "end", "frames": len(frames), "status": "complete",
                   "result_url": f"/result/{start['session_id']}.mp4"}


def test_upload_audio_comes_back_sample_exact_with_its_frames(client: httpx.Client) -> None:
    pcm = tone_pcm(1.0)
    reply = upload(client, wav_bytes(pcm), format="av")
    _, frames, end = frames_of(reply.content)
    assert len(frames) == 25 and end["status"] == "complete"
    audio = b"".join(p[h["image_bytes"]:] for h, p in frames)
    assert audio == pcm  # frame i carries exactly samples [640 i, 640 i + 640)


def test_upload_at_44k_stereo_is_decoded_and_resampled(client: httpx.Client) -> None:
    t = np.arange(int(0.8 * 44100)) / 44100
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 500 * t)], 1)
    flac = io.BytesIO()
    sf.write(flac, stereo, 44100, format="FLAC")
    reply = upload(client, flac.getvalue(), name="speech.flac", kind="audio/flac", format="av")
    assert reply.status_code == 200, reply.text
    _, frames, _ = frames_of(reply.content)
    expected = float_to_s16le(load_audio(flac.getvalue()))
    assert len(frames) == math.ceil(len(expected) / 2 / 640) == 20
    audio = b"".join(p[h["image_bytes"]:] for h, p in frames)
    assert audio[: len(expected)] == expected


def test_mjpeg_stream_is_seed_compatible(client: httpx.Client) -> None:
    still = client.get("/avatar").content
    reply = client.get("/generate", params={"text": "Hi there.", "realtime": "false"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
    assert reply.content.startswith(b"--frame\r\nContent-Type: image/jpeg\r\n")
    images = mjpeg.split(reply.content)
    assert images[0] == still  # the seed sent the static frame first
    assert len(images) > 10
    for jpeg in images:
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (
            AVATAR_SIZE[1], AVATAR_SIZE[0])


def test_mjpeg_is_paced_in_real_time(client: httpx.Client) -> None:
    pcm = tone_pcm(1.2)
    started = time.perf_counter()
    reply = upload(client, wav_bytes(pcm), realtime="true")
    elapsed = time.perf_counter() - started
    images = mjpeg.split(reply.content)
    assert len(images) == 1 + 30
    assert elapsed >= 29 * 0.04 * 0.95  # 30 frames take 1.16 s to show at 25 frames/s


def test_post_generate_json_and_seed_duration_parameter(client: httpx.Client) -> None:
    reply = client.post("/generate", params={"duration": "2.5", "format": "av",
                                             "realtime": "false"},
                        json={"text": "Good morning.", "avatar": AVATAR})
    assert reply.status_code == 200
    _, frames, end = frames_of(reply.content)
    assert end["status"] == "complete" and len(frames) > 10


def test_result_mp4_holds_the_frames_and_the_audio(client: httpx.Client) -> None:
    pcm = tone_pcm(0.8)
    reply = upload(client, wav_bytes(pcm), format="av")
    _, frames, end = frames_of(reply.content)
    video = client.get(end["result_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        decoded = [f for f in container.decode(video=0)]
        vstream = container.streams.video[0]
        astream = container.streams.audio[0]
        assert len(decoded) == len(frames) == 20
        assert (vstream.codec_context.name, astream.codec_context.name) == ("h264", "aac")
        assert abs(float(container.duration) / 1e6 - 0.8) < 0.1
    assert client.get(f"/result/{'0' * 32}.mp4").status_code == 404


def test_get_tts_audio_is_a_wav_with_its_duration(client: httpx.Client) -> None:
    reply = client.get("/get-tts-audio", params={"text": "Testing one two."})
    assert reply.status_code == 200 and reply.headers["content-type"] == "audio/wav"
    assert "tts_audio.wav" in reply.headers["content-disposition"]
    audio, rate = sf.read(io.BytesIO(reply.content), dtype="int16")
    assert rate == 16000 and audio.ndim == 1
    assert float(reply.headers["x-audio-duration"]) == pytest.approx(len(audio) / 16000, abs=1e-3)


def test_avatar_voices_and_avatars(client: httpx.Client) -> None:
    still = client.get("/avatar")
    assert still.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(still.content, np.uint8), cv2.IMREAD_COLOR).shape == (
        AVATAR_SIZE[1], AVATAR_SIZE[0], 3)
    assert client.get("/avatar", params={"avatar": AVATAR}).content == still.content
    avatars = client.get("/avatars").json()
    assert avatars["default"] == AVATAR and [a["name"] for a in avatars["avatars"]] == [AVATAR]
    voices = client.get("/voices").json()["voices"]
    assert any(v["default"] and v["id"] == "en_US-joe-medium" for v in voices)
    legacy = client.get("/generate-from-audio")
    assert mjpeg.split(legacy.content) == [still.content]


def test_page_and_static_files_are_served(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_openapi_documents_every_endpoint(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/generate", "/generate-from-audio", "/avatar", "/get-tts-audio", "/health",
                 "/debug/status", "/debug/config", "/metrics", "/result/{session_id}.mp4",
                 "/sessions/{session_id}/cancel"]:
        assert path in paths, path
    assert "audio_file" in str(paths["/generate-from-audio"]["post"]["requestBody"])


# -- debug, metrics ----------------------------------------------------------------------------


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


# -- barge-in and disconnects ------------------------------------------------------------------


def _stream_in_background(edge: Edge, params: dict, body: bytes) -> tuple[threading.Thread, dict]:
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


def test_new_utterance_on_a_session_interrupts_the_current_one(edge: Edge,
                                                               client: httpx.Client) -> None:
    """Barge-in: the page keeps its session id; a new request on it stops the old stream."""
    body = wav_bytes(tone_pcm(4.0))
    thread, first = _stream_in_background(edge, {"format": "av"}, body)
    assert first["status"] == 200
    second = client.get("/generate", params={"text": "Stop. New words.", "format": "av",
                                             "session_id": first["session"]})
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert first["messages"][-1][0]["status"] == "interrupted"
    assert second.headers["x-session-id"] == first["session"]
    assert frames_of(second.content)[2]["status"] == "complete"


def test_cancel_endpoint_stops_the_stream(edge: Edge, client: httpx.Client) -> None:
    thread, first = _stream_in_background(edge, {"format": "av"}, wav_bytes(tone_pcm(4.0)))
    reply = client.post(f"/sessions/{first['session']}/cancel")
    assert reply.json() == {"session_id": first["session"], "cancelled": True}
    thread.join(timeout=10)
    end = first["messages"][-1][0]
    assert end["type"] == "end" and end["status"] == "cancelled"
    assert end["frames"] < 100
    assert client.post(f"/sessions/{first['session']}/cancel").json()["cancelled"] is False
    assert client.post(f"/sessions/{'f' * 32}/cancel").status_code == 404


def test_client_disconnect_cancels_every_upstream_stream_within_a_second(
    stack: Stack, edge: Edge
) -> None:
    with edge.client() as c:
        request = c.build_request("GET", "/generate", params={
            "text": "This sentence is long enough to keep the renderer busy for a few seconds. "
                    "And here is another one to be sure."})
        reply = c.send(request, stream=True)
        assert reply.status_code == 200
        received = 0
        for chunk in reply.iter_bytes():
            received += chunk.count(b"--frame\r\n")
            if received >= 5:
                break
        assert stack.inflight()["renderer"] == 1
        reply.close()
        closed = time.monotonic()
    while any(stack.inflight().values()) and time.monotonic() - closed < 1.0:
        time.sleep(0.01)
    assert stack.inflight() == {"tts": 0, "audio_features": 0, "renderer": 0}
    assert time.monotonic() - closed < 1.0


# -- limits and bad input ----------------------------------------------------------------------

BAD_REQUESTS = {
    "empty text": (("GET", "/generate", {"params": {"text": "  "}}), 422, "text"),
    "no text": (("GET", "/generate", {}), 422, "text"),
    "text too long": (("GET", "/generate", {"params": {"text": "a" * 5001}}), 422, "5000"),
    "unknown voice": (("GET", "/generate", {"params": {"text": "Hi.", "voice": "nobody"}}),
                      404, "nobody"),
    "unknown avatar": (("GET", "/generate", {"params": {"text": "Hi.", "avatar": "nobody"}}),
                       404, "nobody"),
    "unknown avatar still": (("GET", "/avatar", {"params": {"avatar": "../etc"}}), 404, "etc"),
    "unknown session": (("GET", "/generate", {"params": {"text": "Hi.", "session_id": "x1"}}),
                        404, "session"),
    "bad format": (("GET", "/generate", {"params": {"text": "Hi.", "format": "webm"}}), 422,
                   "format"),
    "post without text": (("POST", "/generate", {"json": {"voice": ""}}), 422, "text"),
    "tts audio empty": (("GET", "/get-tts-audio", {"params": {"text": ""}}), 422, "text"),
    "upload wrong type": (("POST", "/generate-from-audio",
                           {"files": {"audio_file": ("a.txt", b"hello" * 300, "text/plain")}}),
                          415, "not audio"),
    "upload json body": (("POST", "/generate-from-audio", {"json": {"a": 1}}), 415,
                         "multipart"),
    "upload missing field": (("POST", "/generate-from-audio",
                              {"files": {"other": ("a.wav", b"RIFF", "audio/wav")}}), 422,
                             "audio_file"),
    "upload undecodable": (("POST", "/generate-from-audio",
                            {"files": {"audio_file": ("a.wav", bytes(range(256)) * 20,
                                                      "audio/wav")}}), 422, "cannot decode"),
    "upload empty": (("POST", "/generate-from-audio",
                      {"files": {"audio_file": ("a.wav", b"", "audio/wav")}}), 422, "empty"),
    "upload too large": (("POST", "/generate-from-audio",
                          {"files": {"audio_file": ("a.wav", b"\0" * 500_000, "audio/wav")}}),
                         413, "limit"),
    "upload too long": (("POST", "/generate-from-audio",
                         {"files": {"audio_file": ("a.wav", wav_bytes(b"\0\0" * 8000 * 12, 8000),
                                                   "audio/wav")}}), 413, "5 s"),
    "debug extra field": (("POST", "/debug/config", {"json": {"verbose": True}}), 422, "verbose"),
    "no result": (("GET", f"/result/{'a' * 32}.mp4", {}), 404, "no result"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_a_clean_4xx(client: httpx.Client, case: str) -> None:
    (method, path, kwargs), status, needle = BAD_REQUESTS[case]
    reply = client.request(method, path, **kwargs)
    assert_clean_error(reply, status, needle)


def test_bad_input_does_not_disturb_a_running_stream(edge: Edge, client: httpx.Client) -> None:
    thread, first = _stream_in_background(edge, {"format": "mjpeg"}, wav_bytes(tone_pcm(1.5)))
    for (method, path, kwargs), status, _ in BAD_REQUESTS.values():
        assert client.request(method, path, **kwargs).status_code == status
    assert thread.is_alive()  # the stream was still running meanwhile
    thread.join(timeout=20)
    assert len(mjpeg.split(first["body"])) == 1 + 38


def test_session_cap_answers_503_with_retry_after(stack: Stack) -> None:
    edge = stack.edge(max_sessions=1)
    thread, first = _stream_in_background(edge, {"format": "mjpeg"}, wav_bytes(tone_pcm(2.0)))
    assert first["status"] == 200
    with edge.client() as c:
        refused = c.get("/generate", params={"text": "Me too."})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "too many concurrent sessions" in refused.json()["detail"]
        thread.join(timeout=20)
        assert c.get("/generate", params={"text": "Now me.", "realtime": "false"}
                     ).status_code == 200


@pytest.mark.parametrize("down", ["tts", "audio_features", "renderer"])
def test_downstream_down_answers_503_naming_it(stack: Stack, down: str) -> None:
    edge = stack.edge(**{f"{down}_target": f"127.0.0.1:{free_port()}"})
    with edge.client() as c:
        health = c.get("/health").json()
        assert health["status"] == "degraded" and health["services"][down] == "unavailable"
        if down == "tts":
            reply = c.get("/generate", params={"text": "Hi."})
        else:
            reply = upload(c, wav_bytes(tone_pcm(0.3)))
        assert_clean_error(reply, 503, f"{down} service unavailable")
        assert reply.json()["service"] == down
        assert "retry-after" in reply.headers
