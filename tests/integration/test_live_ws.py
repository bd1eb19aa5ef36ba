"""The edge's live-audio WebSocket (/live) against a real stack on 127.0.0.1: PCM in, frames
with their exact audio and input position out, resampling, the pause flush, dropping under
load, the session cap and limits, and a close code with a reason for every kind of bad
input, with the session released each time and other sessions unaffected."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soxr
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from services.edge import stream_format
from services.edge.live_protocol import MAX_MESSAGE_BYTES, origin_allowed
from services.edge.live_timeline import Timeline
from synctalk.audio.pcm import float_to_s16le, s16le_to_float
from tests.support.audio import tone_pcm
from tests.support.http import active_sessions, metric_by_label, wait_sessions
from tests.support.stack import AVATAR_SIZE, Edge, Stack

STEP = 1280  # 40 ms of 16 kHz s16le
Message = tuple[dict[str, Any], bytes]


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    """Dropping is off (a lag budget of a minute): these tests check what comes back."""
    edge = stack.edge(live_max_lag_s=60.0)
    with edge.client() as client:  # load the renderer's model before timing anything
        assert client.get("/generate", params={"text": "Warm.", "realtime": "false"}
                          ).status_code == 200
    return edge


def ws_url(edge: Edge) -> str:
    return edge.url.replace("http://", "ws://") + "/live"


class Live:
    """A /live client whose frames are read on a thread while the test sends."""

    def __init__(self, edge: Edge, config: dict[str, Any] | None = None, **connect_args: Any
                 ) -> None:
        self.ws: ClientConnection = connect(ws_url(edge), **connect_args)
        self.messages: list[Message] = []
        self.closed: tuple[int, str] | None = None
        if config is not None:
            self.ws.send(json.dumps({"type": "config", **config}))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for data in self.ws:
                assert isinstance(data, bytes)
                self.messages.extend(stream_format.parse(data))
        except ConnectionClosed:
            pass
        rcvd = self.ws.close_code, self.ws.close_reason
        self.closed = (rcvd[0] or 1006, rcvd[1] or "")

    @property
    def frames(self) -> list[Message]:
        return [m for m in self.messages if m[0]["type"] == "frame"]

    def send_realtime(self, pcm: bytes, step: int = STEP, speed: float = 1.0) -> None:
        started = time.monotonic()
        for offset in range(0, len(pcm), step):
            try:
                self.ws.send(pcm[offset : offset + step])
            except ConnectionClosed:
                return  # the edge ended the session; `wait_closed` says why
            due = started + (offset + step) / 32000 / speed
            time.sleep(max(0.0, due - time.monotonic()))

    def wait_frames(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n and time.monotonic() < deadline and self.closed is None:
            time.sleep(0.02)
        assert len(self.frames) >= n, (len(self.frames), self.closed)

    def wait_closed(self, timeout: float = 15) -> tuple[int, str]:
        self.thread.join(timeout)
        assert self.closed is not None, "the edge did not close the socket"
        return self.closed

    def close(self) -> None:
        self.ws.close()
        self.thread.join(10)


def test_microphone_audio_in_frames_with_their_audio_out(edge: Edge) -> None:
    pcm = tone_pcm(1.0)
    live = Live(edge, {})
    live.send_realtime(pcm, speed=2.0)
    live.wait_frames(26)  # the pause flush brings out the frames the look-ahead holds back
    assert active_sessions(edge) == 1
    live.close()
    start = live.messages[0][0]
    assert start["type"] == "start" and start["live"] is True and len(start["session_id"]) == 32
    assert (start["width"], start["height"]) == AVATAR_SIZE and start["lookahead_ms"] > 0
    # Live features leave out the default 3 context rows: ave's look-ahead 11 -> 8 frames.
    assert start["lookahead_trim"] == 3 and start["lookahead_ms"] == 40 * 8
    frames = live.frames[:25]
    assert [h["index"] for h, _ in frames] == list(range(25))
    assert [h["input_sample"] for h, _ in frames] == [640 * i for i in range(25)]
    assert all(h["dropped"] == 0 and h["lag_ms"] > 0 for h, _ in frames)
    audio = b"".join(p[h["image_bytes"]:] for h, p in frames)
    assert audio == pcm
    assert all(p[:2] == b"\xff\xd8" for _, p in frames)  # JPEG
    padded = live.frames[25:]
    assert padded and all(h["input_sample"] is None for h, _ in padded)
    wait_sessions(edge, 0)


def test_a_declared_rate_is_resampled_at_the_edge(edge: Edge) -> None:
    rate = 48000
    t = np.arange(int(0.6 * rate)) / rate
    pcm = float_to_s16le(0.5 * np.sin(2 * np.pi * 330 * t))
    live = Live(edge, {"sample_rate": rate})
    live.send_realtime(pcm, step=1920 * 2, speed=2.0 * 3)  # 40 ms of 48 kHz, 2x real time
    live.wait_frames(15)
    live.close()
    expected = soxr.resample(s16le_to_float(pcm), rate, 16000, quality="HQ")
    got = s16le_to_float(b"".join(p[h["image_bytes"]:] for h, p in live.frames))
    got = got[: len(expected)]
    assert np.corrcoef(got[800:-800], expected[800:-800])[0, 1] > 0.99


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455), written by hand for the raw-socket clients."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def raw_socket(edge: Edge, host_header: str | None = None, rcvbuf: int | None = None
               ) -> tuple[socket.socket, bytes]:
    """A WebSocket opened by hand (custom Host, tiny receive buffer); returns the response."""
    port = int(edge.url.rsplit(":", 1)[1])
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /live HTTP/1.1\r\nHost: {host_header or f'127.0.0.1:{port}'}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock, head


def read_close(sock: socket.socket, timeout: float = 10) -> tuple[int, str]:
    """Read frames until the server's close frame; its code and reason."""
    sock.settimeout(timeout)
    buf = b""

    def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed without a close frame")
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out

    while True:
        b0, b1 = need(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", need(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", need(8))
        payload = need(n)
        if b0 & 0x0F == 0x8:
            return struct.unpack(">H", payload[:2])[0], payload[2:].decode()


SECOND = tone_pcm(1.0)
BAD: dict[str, tuple[list[str | bytes], int, str]] = {
    "binary before the config": ([b"\0\0" * 320], 1003, "first message"),
    "text after the config": (['{"type":"config"}', "hello"], 1003, "binary"),
    "config not JSON": (["{nope"], 1007, "config"),
    "config not an object": (["[1, 2]"], 1007, "config"),
    "unknown config field": (['{"type":"config","rate":16000}'], 1007, "config.rate"),
    "sample rate too low": (['{"type":"config","sample_rate":1000}'], 1007, "sample_rate"),
    "sample rate not a number": (['{"type":"config","sample_rate":"fast"}'], 1007,
                                 "sample_rate"),
    "unknown avatar": (['{"type":"config","avatar":"nobody"}'], 1007, "nobody"),
    "odd byte count": (['{"type":"config"}', b"\0\0\0"], 1007, "odd byte count"),
    "too much audio in one message": (['{"type":"config"}', SECOND[:19_200]], 1009, "limit"),
    "message over the size limit": (['{"type":"config"}', b"\0\0" * (MAX_MESSAGE_BYTES // 2 + 1)],
                                    1009, ""),
    "flood beyond real time": (['{"type":"config"}', *[SECOND[:16_000]] * 9], 1008,
                               "faster than real time"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_its_close_code(edge: Edge, case: str) -> None:
    sent, code, needle = BAD[case]
    with connect(ws_url(edge), max_size=None) as ws:
        with pytest.raises(ConnectionClosed) as caught:
            for message in sent:
                ws.send(message)
            while True:
                ws.recv(timeout=15)
    rcvd = caught.value.rcvd
    assert rcvd is not None, caught.value
    assert rcvd.code == code, (rcvd.code, rcvd.reason)
    assert needle in rcvd.reason
    wait_sessions(edge, 0)


def test_other_origins_and_hosts_are_refused(edge: Edge, stack: Stack) -> None:
    with connect(ws_url(edge), origin="https://evil.example") as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
    assert "origin" in caught.value.rcvd.reason
    with connect(ws_url(edge), origin=edge.url) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"type": "config"}))
        assert stream_format.parse(ws.recv(timeout=10))[0][0]["type"] == "start"
    listed = stack.edge(live_max_lag_s=60.0, cors_origins=["https://app.example"])
    with connect(ws_url(listed), origin="https://app.example") as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"type": "config"}))
        assert stream_format.parse(ws.recv(timeout=10))[0][0]["type"] == "start"
    sock, head = raw_socket(edge, host_header="rebound.example")  # DNS rebinding
    with sock:
        assert b" 101 " in head.split(b"\r\n")[0]
        sock.sendall(_ws_frame(0x1, b'{"type":"config"}'))
        code, reason = read_close(sock)
    assert code == 1008 and "allowed_hosts" in reason
    wait_sessions(edge, 0)


def test_session_cap_idle_timeout_and_lifetime(stack: Stack) -> None:
    edge = stack.edge(max_sessions=1, idle_timeout_s=1.0, max_call_s=3.0, live_max_lag_s=60.0)
    first = Live(edge, {})
    first.ws.send(tone_pcm(0.2))
    wait_sessions(edge, 1)
    refused = Live(edge, {})
    code, reason = refused.wait_closed()
    assert code == 1013 and "too many concurrent sessions" in reason
    code, reason = first.wait_closed()  # it sends nothing more
    assert code == 1008 and "idle_timeout_s" in reason
    wait_sessions(edge, 0)
    talker = Live(edge, {})
    talker.send_realtime(tone_pcm(3.6))
    code, reason = talker.wait_closed()
    assert code == 1008 and "max_call_s" in reason
    wait_sessions(edge, 0)


def _dropped(edge: Edge) -> dict[str, float]:
    return metric_by_label(edge, 'synctalk_edge_live_dropped_frames_total{reason="')


def test_frames_the_renderer_cannot_make_in_time_are_dropped(stack: Stack) -> None:
    """4 s of audio within 1.3 s: far more than the renderer makes in that time, so the edge
    drops frames (restarting the utterance rather than queueing) instead of letting the delay
    grow; every frame it does send is within the lag budget."""
    edge = stack.edge(live_max_lag_s=0.2)
    live = Live(edge, {})
    live.send_realtime(tone_pcm(4.0), speed=3.0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(_dropped(edge).values()) < 25:
        time.sleep(0.1)
    live.close()
    dropped = _dropped(edge)
    assert dropped.get("stale", 0) + dropped.get("late", 0) >= 25, dropped
    start = live.messages[0][0]
    budget_ms = start["lookahead_ms"] + 40 + start["max_lag_ms"]
    for header, _ in live.frames:
        assert header["lag_ms"] <= budget_ms
    spoken = [h["input_sample"] for h, _ in live.frames if h["input_sample"] is not None]
    assert spoken == sorted(set(spoken))
    wait_sessions(edge, 0)


def test_a_client_that_never_reads_is_closed_and_others_go_on(stack: Stack) -> None:
    edge = stack.edge(live_max_lag_s=60.0)
    sock, head = raw_socket(edge, rcvbuf=4096)
    assert b" 101 " in head.split(b"\r\n")[0]
    stop = threading.Event()

    def talk() -> None:  # the stuck client keeps talking, but never reads
        sock.sendall(_ws_frame(0x1, b'{"type":"config","jpeg_quality":100}'))
        pcm = tone_pcm(30.0)
        started = time.monotonic()
        for offset in range(0, len(pcm), STEP):
            if stop.is_set():
                return
            try:
                sock.sendall(_ws_frame(0x2, pcm[offset : offset + STEP]))
            except OSError:
                return
            time.sleep(max(0.0, started + (offset + STEP) / 32000 - time.monotonic()))

    stuck = threading.Thread(target=talk, daemon=True)
    stuck.start()
    try:
        wait_sessions(edge, 1)
        other = Live(edge, {})
        other.send_realtime(tone_pcm(2.0))
        other.wait_frames(50)
        other.close()
        wait_sessions(edge, 0, timeout=60)  # the stuck one too: its send queue ran full
    finally:
        stop.set()
        sock.close()
        stuck.join(5)


@pytest.fixture(autouse=True)
def _no_leak(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the stack, no renderer stream is left behind."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("stack")
    deadline = time.monotonic() + 5
    while stack.inflight()["renderer"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.inflight()["renderer"] == 0


def test_origin_rule() -> None:
    host = {"host": "127.0.0.1:8000"}
    assert origin_allowed(host, [])  # not a browser
    assert origin_allowed({**host, "origin": "http://127.0.0.1:8000"}, [])
    assert not origin_allowed({**host, "origin": "http://127.0.0.1:8001"}, [])
    assert not origin_allowed({**host, "origin": "https://evil.example"}, [])
    assert origin_allowed({**host, "origin": "https://app.example"}, ["https://app.example"])
    assert not origin_allowed({**host, "origin": "null"}, [])


def test_timeline_maps_frames_to_input_and_arrival() -> None:
    timeline = Timeline()
    timeline.add(1600, 0, 10.0)  # 0.1 s of input that arrived complete at t = 10
    timeline.add(640, None, 10.5)  # padding
    timeline.add(320, 1600, 11.0)
    assert timeline.locate(0) == (0, pytest.approx(10.0 - 1599 / 16000))
    assert timeline.locate(1599) == (1599, pytest.approx(10.0))
    assert timeline.locate(1600)[0] is None
    assert timeline.locate(2240) == (1600, pytest.approx(11.0 - 319 / 16000))
    assert len(timeline.segments) == 1  # what lies behind is forgotten
