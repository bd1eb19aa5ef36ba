"""The edge's limits and bad input, against a real stack on 127.0.0.1: a clean 4xx for each
bad request without disturbing a running stream, the session cap, and a downstream that is
down answering 503 naming it."""

from __future__ import annotations

import httpx
import pytest

from services.edge import mjpeg
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.http import assert_clean_error, stream_in_background, upload
from tests.support.paths import free_port
from tests.support.stack import Edge, Stack


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge(max_upload_bytes=400_000, max_upload_seconds=5.0,
                      debug={"endpoints": True})


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
    thread, first = stream_in_background(edge, {"format": "mjpeg"}, wav_bytes(tone_pcm(1.5)))
    for (method, path, kwargs), status, _ in BAD_REQUESTS.values():
        assert client.request(method, path, **kwargs).status_code == status
    assert thread.is_alive()  # the stream was still running meanwhile
    thread.join(timeout=20)
    assert len(mjpeg.split(first["body"])) == 1 + 38


def test_session_cap_answers_503_with_retry_after(stack: Stack) -> None:
    edge = stack.edge(max_sessions=1)
    thread, first = stream_in_background(edge, {"format": "mjpeg"}, wav_bytes(tone_pcm(2.0)))
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
