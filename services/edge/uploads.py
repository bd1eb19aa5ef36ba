"""Uploaded audio: size-capped reading, then decoding and resampling to 16 kHz mono s16le.

Accepts the seed's multipart form (field `audio_file`) and, as a convenience, a raw audio
body (`Content-Type: audio/*`). Anything FFmpeg decodes is accepted (WAV of any rate and
width, FLAC, MP3, OGG, the audio track of an MP4 ...): it is decoded in memory, channels
averaged and resampled, so nothing is read as samples that is not audio and no temporary
file is left behind (the multipart parser's spool files are closed before returning).

The body is counted as it arrives, so a chunked upload with no Content-Length is refused
at the byte limit rather than spooled whole first, and the read has a deadline
(`services.upload_timeout_s`): a client trickling its body (slow loris) gets 408 instead
of holding a connection and its buffers open indefinitely.
"""

from __future__ import annotations

import asyncio

import grpc
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from services.edge.errors import EdgeError, bad_input, too_large, unsupported_media
from synctalk.audio.decode import AudioDecodeError, load_audio
from synctalk.audio.pcm import float_to_s16le

FIELD = "audio_file"
_READ_STEP = 1024 * 1024
_MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around the file
_ACCEPTED_GENERIC = {"", "application/octet-stream", "application/ogg", "application/x-wav"}


def acceptable_type(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith(("audio/", "video/")) or kind in _ACCEPTED_GENERIC


async def read_upload(request: Request, max_bytes: int,
                      timeout_s: float | None = None) -> tuple[bytes, str]:
    """(file bytes, file name) of the request's audio; 413 past `max_bytes`, 415 for a body
    that is neither multipart with `audio_file` nor audio, 422 for a missing or empty file,
    408 if the body has not arrived within `timeout_s`."""
    content_type = request.headers.get("content-type", "")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + _MULTIPART_SLACK:
        raise too_large(f"upload of {int(declared)} bytes exceeds the limit of {max_bytes} bytes")
    if content_type.lower().startswith("multipart/form-data"):
        request = _capped(request, max_bytes + _MULTIPART_SLACK)
        reader = _read_form(request, max_bytes)
    elif acceptable_type(content_type) and content_type:
        reader = _read_body(request, max_bytes)
    else:
        raise unsupported_media(
            f"expected multipart/form-data with a file field {FIELD!r} (or an audio/* body), "
            f"got {content_type or 'no content type'!r}")
    try:
        async with asyncio.timeout(timeout_s):
            data, name = await reader
    except ClientDisconnect:
        raise EdgeError(499, grpc.StatusCode.CANCELLED, "client disconnected during upload") from None
    except TimeoutError:
        raise EdgeError(408, grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"upload not received within {timeout_s:g} s "
                        "(services.upload_timeout_s)") from None
    if not data:
        raise bad_input(f"{FIELD}: the file is empty")
    return data, name


def _capped(request: Request, limit: int) -> Request:
    """The request with a body stream that raises 413 once more than `limit` bytes arrived,
    so the multipart parser never spools more than that (its spool files are closed on the
    error)."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise too_large(f"upload exceeds the limit of {limit - _MULTIPART_SLACK} bytes")
        return message

    return Request(request.scope, receive)


async def _read_form(request: Request, max_bytes: int) -> tuple[bytes, str]:
    async with request.form(max_files=1, max_fields=16) as form:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise bad_input(f"{FIELD}: missing file field (multipart form field {FIELD!r})")
        part_type = upload.content_type or ""
        if not acceptable_type(part_type):
            raise unsupported_media(f"{FIELD}: content type {part_type!r} is not audio")
        pieces: list[bytes] = []
        total = 0
        while chunk := await upload.read(_READ_STEP):
            total += len(chunk)
            if total > max_bytes:
                raise too_large(f"upload exceeds the limit of {max_bytes} bytes")
            pieces.append(chunk)
        return b"".join(pieces), upload.filename or "upload"


async def _read_body(request: Request, max_bytes: int) -> tuple[bytes, str]:
    pieces: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_large(f"upload exceeds the limit of {max_bytes} bytes")
        pieces.append(chunk)
    return b"".join(pieces), "upload"


async def decode_upload(data: bytes, max_seconds: float) -> bytes:
    """File bytes -> 16 kHz mono s16le; 413 past `max_seconds`, 422 if not decodable audio."""
    try:
        audio = await asyncio.to_thread(load_audio, data, max_seconds=max_seconds)
    except AudioDecodeError as err:
        message = str(err).removeprefix("<bytes>: ")
        if "longer than" in message:
            raise too_large(f"{FIELD}: {message} (the limit is {max_seconds:g} s)") from None
        raise bad_input(f"{FIELD}: {message}") from None
    return float_to_s16le(audio)
