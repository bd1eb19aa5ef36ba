"""Reliability under faults (issue 8 §1), a slow reader, with every service a real process on
127.0.0.1: it holds back its own pipeline (the edge's memory stays flat) and a concurrent
session keeps real time.

The stack (tests/support/fault_stack.py) is started once for the module.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from services.edge import mjpeg
from tests.support import fault_stack
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.fault_stack import HEAVY, Faults
from tests.support.faults import FPS, figure, log_events, upload
from tests.support.processes import AvStream, EdgeProcess, wait_until

faults, up = fault_stack.register()
MB = 1024 * 1024
BESIDE_AT_S = 5  # when the concurrent session runs, after the slow stream has stalled


class SlowReader:
    """An HTTP client that takes the MJPEG stream one part per call, on a socket with a tiny
    receive buffer, so the edge cannot park the stream in the kernel."""

    def __init__(self, edge: EdgeProcess, path: str, body: bytes, content_type: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", edge.port))
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        self.sock.sendall(head.encode() + body)
        self.buf = b""
        self.parts = 0

    def headers(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}

    def read_part(self) -> None:
        """Read on until one more MJPEG part has started."""
        marker = f"--{mjpeg.BOUNDARY}\r\n".encode("ascii")
        target = self.parts + 1
        while self.buf.count(marker) < target:
            self._recv()
        self.parts = target

    def _recv(self) -> None:
        data = self.sock.recv(4096)
        assert data, "the edge closed the slow stream"
        self.buf += data

    def close(self) -> None:
        self.sock.close()


def realtime_session(edge: EdgeProcess, seconds: float) -> float:
    """Seconds from request to the end of a complete realtime av session of `seconds` of audio."""
    session = AvStream(edge, "/generate-from-audio", **upload(seconds)).finish(30)
    assert session.end is not None and session.end["status"] == "complete", session.summary()
    assert session.frames == seconds * FPS and session.end_at is not None
    return session.end_at - session.started_at


def frames_delivered(edge: EdgeProcess) -> float:
    """Frames the edge has handed to HTTP response bodies so far (its /metrics counter)."""
    with edge.client(timeout=5) as client:
        text = client.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("synctalk_edge_frames_total{"))


def test_a_slow_reader_is_held_back_without_memory_growth_or_slowing_others(up: Faults) -> None:
    edge = up.edge
    upload_s, read_s, normal_s = 60.0, 8, 2.0
    alone_s = realtime_session(edge, normal_s)  # the same session with no slow reader about
    rss_before = edge.rss_bytes()
    # As fast as it renders (realtime=0), heavy frames: only backpressure can hold it back.
    slow = SlowReader(edge, f"/generate-from-audio?realtime=0&avatar={HEAVY}",
                      wav_bytes(tone_pcm(upload_s)), "audio/wav")
    try:
        status, headers = slow.headers()
        assert status == 200
        slow_id = headers["x-session-id"]
        rss, delivered = [rss_before], {}
        beside_s = None
        for second in range(1, read_s + 1):  # one frame a second
            slow.read_part()
            if second == BESIDE_AT_S:
                beside_s = realtime_session(edge, normal_s)
            else:
                time.sleep(1.0)
            rss.append(edge.rss_bytes())
            delivered[second] = frames_delivered(edge)
    finally:
        slow.close()

    # The reader took a frame a second, and so, once the buffers between were full, did
    # the edge (the concurrent session's frames aside): backpressure, not buffering.
    taken = delivered[read_s] - delivered[BESIDE_AT_S - 1] - normal_s * FPS
    figure("slow_reader.frames_taken_by_edge_in_last_s",
           taken, f"frames in {read_s - BESIDE_AT_S + 1} s")
    assert taken <= read_s - BESIDE_AT_S + 1 + 8

    # A realtime session beside the stalled one keeps real time (the av stream leads by
    # up to 1 s, so it ends about 1 s after its first frame).
    figure("slow_reader.normal_session_alone_s", alone_s, f"s (for {normal_s:g} s of audio)")
    figure("slow_reader.normal_session_beside_slow_s", beside_s, "s")
    assert beside_s is not None
    assert beside_s < alone_s + 1.0
    assert beside_s < normal_s + 2.0

    # The edge's memory stayed flat while the reader stalled.
    growth = max(rss) - rss_before
    figure("slow_reader.edge_rss_before_mb", rss_before / MB, "MB")
    figure("slow_reader.edge_rss_growth_mb", growth / MB, "MB")
    assert growth < 50 * MB

    # The renderer rendered a bounded lead of what the reader took, not the whole upload.
    def slow_end() -> dict[str, Any] | None:
        return next((r for r in log_events(edge, "utterance.end")
                     if r.get("session_id") == slow_id), None)

    wait_until(slow_end, 10, "the slow session's end")
    record = slow_end()
    assert record is not None and record["outcome"] == "disconnected"
    figure("slow_reader.frames_read", slow.parts, "frames")
    figure("slow_reader.frames_rendered", record["frames"], f"frames of {upload_s * FPS:g}")
    assert slow.parts >= read_s
    assert record["frames"] < 250
