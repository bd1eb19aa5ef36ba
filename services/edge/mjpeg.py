"""MJPEG over HTTP (`multipart/x-mixed-replace; boundary=frame`), as the seed server sent it.

Browsers show it in an <img>; there is no sound in it. Parts carry a Content-Length (which
the seed left out) so non-browser clients can split the stream without scanning for the
boundary.
"""

from __future__ import annotations

BOUNDARY = "frame"
MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def part(jpeg: bytes) -> bytes:
    """One multipart part holding one JPEG image."""
    head = (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    ).encode("ascii")
    return head + jpeg + b"\r\n"


def split(body: bytes) -> list[bytes]:
    """The JPEG images of an MJPEG body (for clients and tests). Parts are read by their
    Content-Length, so image bytes that look like a boundary do no harm."""
    images = []
    marker = f"--{BOUNDARY}\r\n".encode("ascii")
    pos = body.find(marker)
    while pos != -1:
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end == -1:
            break
        head = body[pos + len(marker) : head_end].split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head
                       if line.lower().startswith(b"content-length:")), None)
        start = head_end + 4
        if length is None:  # a part without a length ends at the next boundary
            nxt = body.find(marker, start)
            end = len(body) if nxt == -1 else nxt
            images.append(body[start:end].removesuffix(b"\r\n"))
            pos = nxt
            continue
        images.append(body[start : start + length])
        pos = body.find(marker, start + length)
    return images
