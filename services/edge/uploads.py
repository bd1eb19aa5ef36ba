"""Uploaded audio: size-capped reading, then decoding and resampling to 16 kHz mono s16le.

Accepts the seed's multipart form (field `audio_file`) and, as a convenience, a raw audio
body (`Content-Type: audio/*`). Anything FFmpeg decodes is accepted (WAV of any rate and
width, FLAC, MP3, OGG, the audio track of an MP4 ...): channels averaged and resampled, so
nothing is read as samples that is not audio.

The caller admits the request (a session slot) before anything here runs. The body is
spooled to an unnamed temporary file as it arrives (the multipart parser's spool, or our
own for a raw body), never held whole in memory, and decoded straight from that file; the
file is closed, so gone, on every path. Decodes run in worker threads, at most
`services.max_concurrent_decodes` at once, each within a budget
(`synctalk.audio.decode`): at most `max_upload_seconds` of output and
`max_upload_seconds x DECODE_BUDGET_RATE` decoded samples over all channels.

The body is counted as it arrives, so a chunked upload with no Content-Length is refused
at the byte limit rather than spooled whole first, and the read has a deadline
(`services.upload_timeout_s`): a client trickling its body (slow loris) gets 408 instead
of holding a connection and its buffers open indefinitely.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from typing import BinaryIO

import grpc
import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from services.edge.errors import EdgeError, bad_input, too_large, unsupported_media
from synctalk.audio.decode import AudioDecodeError, limit_ffmpeg_allocations, load_audio
from synctalk.audio.pcm import SAMPLE_RATE, float_to_s16le
from synctalk.config import ServicesConfig

FIELD = "audio_file"
DECODE_BUDGET_RATE = 96_000 * 2  # decoded samples per allowed second: 96 kHz stereo
_MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around the file
_ACCEPTED_GENERIC = {"", "application/octet-stream", "application/ogg", "application/x-wav"}


def acceptable_type(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith(("audio/", "video/")) or kind in _ACCEPTED_GENERIC


class Uploads:
    """Receives and decodes the uploads of one app, at most `max_concurrent_decodes` at once."""

    def __init__(self, services: ServicesConfig) -> None:
        self.services = services
        self._decodes = asyncio.Semaphore(max(1, services.max_concurrent_decodes))
        limit_ffmpeg_allocations()

    async def pcm(self, request: Request) -> bytes:
        """The request's audio as 16 kHz mono s16le (see `received` and `decode_upload`)."""
        svc = self.services
        async with received(request, svc.max_upload_bytes, svc.upload_timeout_s) as upload:
            async with self._decodes:
                return await decode_upload(upload, svc.max_upload_seconds)


@contextlib.asynccontextmanager
async def received(request: Request, max_bytes: int,
                   timeout_s: float | None = None) -> AsyncIterator[BinaryIO]:
    """The request's audio file, spooled and rewound; closed (so removed) on leaving. 413
    past `max_bytes`, 415 for a body that is neither multipart with `audio_file` nor audio,
    422 for a missing or empty file, 408 if the body has not arrived within `timeout_s`."""
    content_type = request.headers.get("content-type", "")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + _MULTIPART_SLACK:
        raise too_large(f"upload of {int(declared)} bytes exceeds the limit of {max_bytes} bytes")
    async with contextlib.AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(timeout_s):
                if content_type.lower().startswith("multipart/form-data"):
                    upload = await _read_form(_capped(request, max_bytes + _MULTIPART_SLACK),
                                              max_bytes, stack)
                elif acceptable_type(content_type) and content_type:
                    upload = await _read_body(request, max_bytes, stack)
                else:
                    raise unsupported_media(
                        f"expected multipart/form-data with a file field {FIELD!r} (or an "
                        f"audio/* body), got {content_type[:64] or 'no content type'!r}")
        except ClientDisconnect:
            raise EdgeError(499, grpc.StatusCode.CANCELLED,
                            "client disconnected during upload") from None
        except TimeoutError:
            raise EdgeError(408, grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"upload not received within {timeout_s:g} s "
                            "(services.upload_timeout_s)") from None
        yield upload


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


async def _read_form(request: Request, max_bytes: int,
                     stack: contextlib.AsyncExitStack) -> BinaryIO:
    """The form's file part, in the parser's spool file (closed when `stack` closes)."""
    form = await stack.enter_async_context(request.form(max_files=1, max_fields=16))
    upload = form.get(FIELD)
    if not isinstance(upload, UploadFile):
        raise bad_input(f"{FIELD}: missing file field (multipart form field {FIELD!r})")
    part_type = upload.content_type or ""
    if not acceptable_type(part_type):
        raise unsupported_media(f"{FIELD}: content type {part_type[:64]!r} is not audio")
    size = upload.size if upload.size is not None else _size_of(upload.file)
    if size > max_bytes:
        raise too_large(f"upload exceeds the limit of {max_bytes} bytes")
    if size == 0:
        raise bad_input(f"{FIELD}: the file is empty")
    upload.file.seek(0)
    return upload.file  # type: ignore[return-value]


async def _read_body(request: Request, max_bytes: int,
                     stack: contextlib.AsyncExitStack) -> BinaryIO:
    """A raw audio body, spooled as it arrives into an unnamed temporary file."""
    spool: BinaryIO = stack.enter_context(tempfile.TemporaryFile())  # type: ignore[arg-type]
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_large(f"upload exceeds the limit of {max_bytes} bytes")
        spool.write(chunk)
    if total == 0:
        raise bad_input(f"{FIELD}: the file is empty")
    spool.seek(0)
    return spool


def _size_of(file: BinaryIO) -> int:
    file.seek(0, 2)
    return file.tell()


async def decode_upload(upload: BinaryIO | bytes, max_seconds: float) -> bytes:
    """File -> 16 kHz mono s16le; 413 past `max_seconds` or the decode budget, 422 if not
    decodable audio."""
    try:
        audio = await asyncio.to_thread(load_audio, upload, max_seconds=max_seconds,
                                        max_samples=int(max_seconds * DECODE_BUDGET_RATE))
    except AudioDecodeError as err:
        message = str(err).removeprefix("<bytes>: ").removeprefix("<file>: ")
        if "longer than" in message or "decode budget" in message:
            raise too_large(f"{FIELD}: {message} (the limit is {max_seconds:g} s)") from None
        raise bad_input(f"{FIELD}: {message}") from None
    return _to_s16le(audio)


def _to_s16le(audio: np.ndarray, block: int = 10 * SAMPLE_RATE) -> bytes:
    """`float_to_s16le` block by block, so the conversion's temporaries stay small."""
    out = np.empty(audio.size, "<i2")
    for start in range(0, audio.size, block):
        out[start:start + block] = np.frombuffer(float_to_s16le(audio[start:start + block]), "<i2")
    return out.tobytes()
