"""The bad-input catalogue (docs/security.md), request bodies: multipart abuse, a chunked
body past the limit and a slow-loris upload, against a real stack on 127.0.0.1. After each
refusal the edge must still serve, hold no session or downstream stream, and have left no
temporary file (named or open) behind."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx

from tests.support import bad_input
from tests.support.bad_input import MAX_UPLOAD_BYTES, UPLOAD_TIMEOUT_S
from tests.support.hostile_audio import (
    WAV_1S,
)
from tests.support.http import assert_clean_error, upload
from tests.support.raw_http import address, multipart_head, read_reply, status_of
from tests.support.stack import Edge

private_tmp, edge, clean = bad_input.register()


def test_many_multipart_fields_get_400(client: httpx.Client, clean: None) -> None:
    fields = {f"f{i}": "x" for i in range(100)}
    reply = client.post("/generate-from-audio", data=fields,
                        files={"audio_file": ("a.wav", WAV_1S, "audio/wav")})
    assert_clean_error(reply, 400, "Too many fields")


def test_two_files_get_400(client: httpx.Client, clean: None) -> None:
    reply = client.post("/generate-from-audio", files=[
        ("audio_file", ("a.wav", WAV_1S, "audio/wav")),
        ("audio_file", ("b.wav", WAV_1S, "audio/wav"))])
    assert_clean_error(reply, 400, "Too many files")


def test_declared_oversize_multipart_gets_413_before_the_body(client: httpx.Client,
                                                             clean: None) -> None:
    reply = upload(client, b"\0" * (MAX_UPLOAD_BYTES + 100_000))
    assert_clean_error(reply, 413, "limit")


def test_chunked_oversize_multipart_is_cut_off_at_the_limit(edge: Edge, clean: None) -> None:
    """No Content-Length: the edge must stop reading at the byte limit, not spool the whole
    body to disk first. The client offers 40 MB and gets 413 long before sending it all."""
    boundary = "b0undary"
    offered = 40_000_000
    sent = 0
    with socket.create_connection(address(edge), timeout=10) as sock:
        sock.sendall(b"POST /generate-from-audio HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Transfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=" + boundary.encode()
                     + b"\r\n\r\n")
        head = multipart_head(boundary)
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        piece = b"\0" * 65536
        sock.settimeout(0.0)
        reply = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < offered and not reply:
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
                except BlockingIOError:
                    time.sleep(0.005)
                with contextlib.suppress(BlockingIOError):
                    reply = sock.recv(65536)
        sock.settimeout(1.0)
        reply = read_reply(sock, reply, time.monotonic() + 10)
    assert status_of(reply) == 413, reply[:200]
    assert b"exceeds the limit" in reply
    assert sent < offered / 2, sent  # refused while the body was still coming


def test_slow_loris_upload_gets_408_and_others_are_served(edge: Edge, clean: None) -> None:
    """A client trickling its body is cut off after `services.upload_timeout_s`; meanwhile
    the edge answers everyone else at once."""
    boundary = "sl0w"
    head = multipart_head(boundary)
    fast_part = WAV_1S + b"\0" * 1_100_000  # past the 1 MB spool: the part is on disk
    declared = len(head) + len(fast_part) + 500_000
    health_times: list[float] = []
    stop = threading.Event()

    def others() -> None:
        with edge.client(timeout=10) as c:
            while not stop.is_set():
                started = time.monotonic()
                assert c.get("/health").status_code == 200
                health_times.append(time.monotonic() - started)
                time.sleep(0.05)

    watcher = threading.Thread(target=others, daemon=True)
    watcher.start()
    try:
        with socket.create_connection(address(edge), timeout=10) as sock:
            sock.sendall(b"POST /generate-from-audio HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: multipart/form-data; boundary=" + boundary.encode()
                         + b"\r\nContent-Length: %d\r\n\r\n" % declared + head + fast_part)
            started = time.monotonic()
            sock.settimeout(0.1)
            reply = b""
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while not reply and time.monotonic() - started < UPLOAD_TIMEOUT_S + 5:
                    sock.sendall(b"\0" * 10)  # 100 bytes/s: 5000 s for the rest
                    with contextlib.suppress(TimeoutError):
                        reply = sock.recv(65536)
            elapsed = time.monotonic() - started
            reply = read_reply(sock, reply, time.monotonic() + 2)
    finally:
        stop.set()
        watcher.join(10)
    assert status_of(reply) == 408, reply[:200]
    assert b"upload_timeout_s" in reply
    assert UPLOAD_TIMEOUT_S - 0.2 < elapsed < UPLOAD_TIMEOUT_S + 1.5
    assert len(health_times) >= 5 and max(health_times) < 1.0
