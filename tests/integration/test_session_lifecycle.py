"""One owner for a session's life on the edge (issue 20, issue 14 fault 2): a failure
injected at each step of a request (validation inside a service call, encoding on the way to
gRPC, decoding, a downstream error, a cleanup step, the debug recorder) gives the slot back
exactly once; the edge's active sessions return to 0 and the next request succeeds. Plus the
speech-length limit and admission before an upload's body, on a real stack on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from services.edge import debug as debug_module
from services.edge import runtime as runtime_module
from services.edge import uploads as uploads_module
from services.edge import validation
from services.edge.clients import Downstream
from services.edge.debug import DebugRecorder
from services.edge.errors import EdgeError
from services.edge.orchestrator import Utterance
from services.edge.runtime import EdgeRuntime
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.http import frames_of, upload
from tests.support.stack import Edge, Stack

WAV = wav_bytes(tone_pcm(0.3))


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge(max_sessions=2, max_stream_seconds=20.0, max_upload_seconds=5.0,
                      debug={"endpoints": True, "enabled": True, "save_frames": True,
                             "save_audio": True})


def assert_next_request_works(client: httpx.Client) -> None:
    reply = upload(client, WAV, format="av")
    assert reply.status_code == 200, reply.text
    assert frames_of(reply.content)[2]["status"] == "complete"


@pytest.fixture
def clean(stack: Stack, edge: Edge) -> Iterator[None]:
    """After the test: no slot held, no backend stream left (the next request working is
    asserted where a request got past admission)."""
    yield
    stack.settle(edge)


# -- a failure injected at each step --------------------------------------------------------------


def _raise(exc: BaseException) -> Any:
    def fail(*args: object, **kwargs: object) -> Any:
        raise exc
    return fail


def _araise(exc: BaseException) -> Any:
    async def fail(*args: object, **kwargs: object) -> Any:
        raise exc
    return fail


async def _failing_frames(self: Utterance) -> AsyncIterator[Any]:
    raise EdgeError(503, grpc.StatusCode.UNAVAILABLE, "renderer service unavailable",
                    service="renderer")
    yield  # pragma: no cover - makes this an async generator


BUSY = EdgeError(503, grpc.StatusCode.UNAVAILABLE, "audio_features service unavailable",
                 service="audio_features")

# step -> (object, attribute, replacement, expected status of a text and an upload request)
STEPS: dict[str, tuple[object, str, Any, int]] = {
    "lookahead lookup (downstream error)": (Downstream, "lookahead_frames", _araise(BUSY), 503),
    "utterance start (unexpected error)": (Utterance, "start", _araise(RuntimeError("boom")), 500),
    "input submitted (encoding error)": (
        Utterance, "submit", _raise(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate")), 500),
    "first frame (downstream error)": (Utterance, "frames", _failing_frames, 503),
    "upload decode (unexpected error)": (uploads_module, "load_audio",
                                         _raise(RuntimeError("decoder crashed")), 500),
    "utterance close fails": (Utterance, "aclose", _araise(RuntimeError("close failed")), 200),
    "debug recorder close fails": (DebugRecorder, "close",
                                   _araise(RuntimeError("Error : System error")), 200),
    "debug recorder cannot be made": (DebugRecorder, "maybe", _raise(OSError("no space")), 200),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_failure_at_each_step_gives_the_slot_back(stack: Stack, edge: Edge, clean: None,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    step: str) -> None:
    owner, name, replacement, status = STEPS[step]

    def send(request: Any) -> httpx.Response | None:
        """The reply (on a fresh connection); None where an unexpected error (500) dropped
        the connection after answering (Starlette re-raises it for the server to log)."""
        try:
            with edge.client() as client:
                return request(client)
        except httpx.ReadError:
            assert status == 500
            return None

    with monkeypatch.context() as patch:
        patch.setattr(owner, name, replacement)
        for _ in range(2):  # 4 requests, 2 slots: a leak would lock the edge
            text = send(lambda client: client.get("/generate", params={
                "text": "Hi.", "format": "av", "realtime": "false"}))
            audio = send(lambda client: upload(client, WAV, format="av"))
            for reply in (text, audio):
                if reply is None:
                    continue
                if step.startswith("upload") and reply is text:
                    assert reply.status_code == 200
                    continue
                assert reply.status_code == status, (step, reply.text)
                if status == 200:
                    assert frames_of(reply.content)[2]["status"] == "complete"
                else:
                    assert "Traceback" not in reply.text
    stack.settle(edge)
    with edge.client() as client:
        assert_next_request_works(client)


def test_text_that_cannot_be_encoded_fails_in_tts_and_gives_the_slot_back(
        client: httpx.Client, clean: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past every edge check (switched off here), a lone surrogate reaches the way to TTS:
    it goes as invalid UTF-8, TTS refuses it, and the request ends 422 naming TTS."""
    monkeypatch.setattr(validation, "_find_problem", lambda value, path="body": None)
    monkeypatch.setattr(EdgeRuntime, "check_text", lambda self, text: text)
    for _ in range(3):
        reply = client.post("/generate", content=b'{"text": "Hi \\ud800 there."}',
                            headers={"Content-Type": "application/json"},
                            params={"realtime": "false"})
        assert reply.status_code == 422, reply.text
        assert reply.json()["service"] == "tts" and "UTF-8" in reply.json()["detail"]
    assert_next_request_works(client)


def test_lone_surrogates_never_cost_a_slot(client: httpx.Client, clean: None) -> None:
    """The issue's case: sixteen such requests used to lock the edge."""
    for _ in range(16):
        reply = client.post("/generate", content=b'{"text": "Hi \\ud83d there."}',
                            headers={"Content-Type": "application/json"},
                            params={"realtime": "false"})
        assert reply.status_code == 422 and "lone surrogate" in reply.text
    assert_next_request_works(client)


def test_debug_writes_that_fail_are_logged_once_and_never_cut_the_stream(
        client: httpx.Client, clean: None, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """soundfile reports a full disk as RuntimeError; frames fail with OSError. Neither may
    cut the stream, keep the slot, or log once per frame."""
    monkeypatch.setattr(debug_module, "_append_wav", _raise(RuntimeError("Error : System error")))
    monkeypatch.setattr(debug_module, "_write_whole", _raise(OSError(28, "No space left")))
    capfd.readouterr()
    reply = client.get("/generate", params={"text": "Hello there, how are you?", "format": "av",
                                            "realtime": "false"})
    assert reply.status_code == 200
    _, frames, end = frames_of(reply.content)
    assert end["status"] == "complete" and len(frames) > 10
    deadline = time.monotonic() + 5
    log = ""
    while log.count("debug.write_failed") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        log += capfd.readouterr().err
    assert log.count("debug.write_failed") == 2, log  # once for frames, once for audio
    assert_next_request_works(client)


# -- speech longer than a stream -------------------------------------------------------------------


def test_text_whose_speech_exceeds_the_stream_limit_is_refused_up_front(
        client: httpx.Client, clean: None) -> None:
    started = time.monotonic()
    reply = client.get("/generate", params={"text": "Hello there. " * 20})  # ~26 s by the rule
    assert reply.status_code == 422 and "stream limit of 20 s" in reply.json()["detail"]
    reply = client.get("/generate", params={"text": "1" * 41})  # digits read out: ~20.5 s
    assert reply.status_code == 422 and "max_stream_seconds" in reply.json()["detail"]
    assert time.monotonic() - started < 2


def test_speech_past_the_limit_is_cut_with_a_clear_status(
        stack: Stack, clean: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the estimate lets through, TTS output past the limit ends the stream with
    the stream-limit message (never "busy"), as soon as it is reached."""
    monkeypatch.setattr(runtime_module, "check_speech_length", lambda text, limit: None)
    short = stack.edge(max_stream_seconds=1.5)
    with short.client() as c:
        started = time.monotonic()
        reply = c.get("/generate", params={"text": "Hello there, this runs a while. " * 4,
                                           "format": "av", "realtime": "false"})
        assert time.monotonic() - started < 30
    if reply.status_code == 422:  # reached before the first frame
        assert "stream limit of 1.5 s" in reply.json()["detail"]
    else:
        assert reply.status_code == 200
        _, frames, end = frames_of(reply.content)
        assert end["status"] == "error" and "stream limit of 1.5 s" in end["error"], end
        assert "busy" not in end["error"] and len(frames) <= 1.5 * 25
    assert short.server.runtime.sessions.active == 0


# -- admission before the body ---------------------------------------------------------------------


def _post_head(edge: Edge, length: int) -> socket.socket:
    host, port = edge.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /generate-from-audio?realtime=false HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: audio/wav\r\nContent-Length: %d\r\n\r\n" % length)
    return sock


def _reply(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    with contextlib.suppress(TimeoutError):
        return sock.recv(65536)
    return b""


def test_over_cap_upload_is_refused_before_its_body_is_read(stack: Stack, clean: None) -> None:
    """Two uploads hold both slots while their bodies are still coming; a third is refused
    503 + Retry-After on its headers alone, and the two then complete."""
    capped = stack.edge(max_sessions=2)
    holders = [_post_head(capped, len(WAV)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while capped.server.runtime.sessions.active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert capped.server.runtime.sessions.active == 2
        late = _post_head(capped, len(WAV))
        with late:
            reply = _reply(late, 5)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b"retry-after: 2" in reply.lower()
        for sock in holders:
            sock.sendall(WAV)
            assert _reply(sock, 30).startswith(b"HTTP/1.1 200")
    finally:
        for sock in holders:
            sock.close()
    deadline = time.monotonic() + 5
    while capped.server.runtime.sessions.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert capped.server.runtime.sessions.active == 0


def test_upload_spool_is_removed_on_every_path(client: httpx.Client, clean: None,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The raw-body spool is an unnamed temporary file: nothing is left, named or open."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for body in (WAV, b"garbage" * 1000, WAV[:30]):
        client.post("/generate-from-audio", content=body, params={"realtime": "false"},
                    headers={"Content-Type": "audio/wav"})
    reply = client.post("/generate-from-audio", content=WAV * 3,
                        params={"realtime": "false"}, headers={"Content-Type": "audio/wav"})
    assert reply.status_code == 200
    assert list(tmp_path.iterdir()) == []
    assert [fd for fd in Path("/proc/self/fd").iterdir() if str(tmp_path) in _target(fd)] == []


def _target(fd: Path) -> str:
    with contextlib.suppress(OSError):
        return str(fd.readlink())
    return ""


def test_animate_session_still_works(edge: Edge, clean: None) -> None:
    with grpc.insecure_channel(edge.grpc_address) as channel:
        frames = list(avatar_pb2_grpc.AvatarStub(channel).Animate(iter([
            avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig()),
            avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=tone_pcm(0.4)))]),
            timeout=30))
    assert len(frames) == 10


def test_a_lease_is_released_exactly_once() -> None:
    """Unit: releasing twice frees one slot; a refused admission makes no session; a
    barge-in's overlapping leases keep the session busy until both are released."""
    from services.edge.sessions import SessionManager

    sessions = SessionManager(max_active=1)
    first = sessions.admit_new()
    first.release()
    first.release()
    assert sessions.active == 0
    held = sessions.admit_new()
    kept = len(sessions._sessions)
    with pytest.raises(EdgeError) as refused:
        sessions.admit_new()
    assert refused.value.http_status == 503 and len(sessions._sessions) == kept
    barge_in = sessions.admit(held.session)  # same session: no new slot needed
    held.release()
    assert sessions.active == 1
    barge_in.release()
    barge_in.release()
    assert sessions.active == 0
