"""HTTP/1.1 spoken by hand over a socket, for what httpx will not send: chunked or trickled
bodies, oversize request lines, replies read as they come."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from tests.support.stack import Edge


def address(edge: Edge) -> tuple[str, int]:
    parts = urlsplit(edge.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def multipart_head(boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio_file\"; "
            f"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def _complete(reply: bytes) -> bool:
    head, sep, body = reply.partition(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return bool(sep) and len(body) >= int(line.split(b":")[1])
    return False


def read_reply(sock: socket.socket, reply: bytes, until: float) -> bytes:
    """`reply` completed from the socket: headers and a Content-Length body."""
    while time.monotonic() < until and not _complete(reply):
        try:
            piece = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            time.sleep(0.005)
            continue
        if not piece:
            break
        reply += piece
    return reply
