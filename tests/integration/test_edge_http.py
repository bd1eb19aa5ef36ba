"""The edge's HTTP API against a real stack on 127.0.0.1 (tts, audio_features, renderer,
edge under uvicorn): every endpoint, frames joined with their audio, MJPEG compatibility and
the mp4 result."""

from __future__ import annotations

import io
import math
import time

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
from tests.support.http import frames_of, upload
from tests.support.stack import AVATAR, AVATAR_SIZE, Edge, Stack

TEXT = "Hello there. This is a short test."


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge(max_upload_bytes=400_000, max_upload_seconds=5.0,
                      debug={"endpoints": True})


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
    for asset in ("/static/main.js", "/static/style.css"):
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
