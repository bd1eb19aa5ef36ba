"""Decode whatever audio a user hands us (WAV, FLAC, MP3, OGG, the audio of an MP4, ...) to
the project's float32 16 kHz mono: PyAV's bundled FFmpeg decodes, channels are averaged,
soxr resamples.

Memory is bounded by what the caller allows, never by what the file says. Decoded frames
are downmixed and resampled to 16 kHz one at a time (a streaming resampler), so only the
16 kHz output is ever held whole; `max_seconds` bounds that output and `max_samples` the
decoded input (rate x channels x seconds, so a 10-minute file at 655 kHz or with hundreds of
channels stops early); and `limit_ffmpeg_allocations` caps any single FFmpeg allocation, so
container metadata (a WAV chunk claiming a gigabyte, an oversized tag) cannot size one.
"""

from __future__ import annotations

import ctypes
import glob
import io
import os
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soxr

from synctalk.audio.pcm import SAMPLE_RATE

FFMPEG_MAX_ALLOC = 64 * 1024 * 1024
_allocations_limited = False


def limit_ffmpeg_allocations(max_bytes: int = FFMPEG_MAX_ALLOC) -> bool:
    """Cap every single allocation of this process's FFmpeg (PyAV's bundled libavutil) at
    `max_bytes` (`av_max_alloc`); a demuxer asked to allocate more fails with an error
    instead. Process-wide and idempotent; False if the library cannot be found."""
    global _allocations_limited
    if _allocations_limited:
        return True
    libs = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libavutil*.so*"))):
        try:
            ctypes.CDLL(path).av_max_alloc(ctypes.c_size_t(max_bytes))
        except (OSError, AttributeError):
            continue
        _allocations_limited = True
    return _allocations_limited


class AudioDecodeError(ValueError):
    """The input is not decodable audio, holds no audio, or is too long."""


def load_audio(
    source: str | Path | bytes | BinaryIO, *, max_seconds: float | None = None,
    max_samples: int | None = None,
) -> np.ndarray:
    """Decode `source` (a path, the file's bytes or an open binary file) to float32 mono at
    16 kHz.

    `max_seconds` stops decoding and raises AudioDecodeError once the audio runs longer,
    and `max_samples` once more samples than that (all channels counted) were decoded, so
    an oversized or bomb-like upload costs no more than the limits.
    """
    handle: io.BytesIO | BinaryIO | str
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioDecodeError("empty input")
        handle = io.BytesIO(bytes(source))
        name = "<bytes>"
    elif hasattr(source, "read"):
        handle, name = source, "<file>"  # type: ignore[assignment]
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(f"{path}: no such file")
        handle, name = str(path), str(path)
    try:
        with av.open(handle, mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{name}: no audio stream")
            stream = container.streams.audio[0]
            if stream.codec_context is None:  # e.g. a WAV header naming 0 bits per sample
                raise AudioDecodeError(f"{name}: no decoder for the audio stream")
            out, decoded = _decode_16k(container, stream, max_seconds, max_samples, name)
    except AudioDecodeError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, EOFError, ValueError, MemoryError,
            RuntimeError) as exc:
        # ValueError: PyAV's resampler refuses a frame whose layout or rate changed mid-stream;
        # MemoryError: an allocation over `limit_ffmpeg_allocations`; RuntimeError: soxr.
        raise AudioDecodeError(f"{name}: cannot decode audio ({exc})") from exc
    if decoded == 0:
        raise AudioDecodeError(f"{name}: the audio stream holds no samples")
    if out.size == 0:  # e.g. one sample at 48 kHz
        raise AudioDecodeError(f"{name}: the audio is shorter than one sample at 16 kHz")
    return out


class _Output:
    """The 16 kHz result, filled in place (no list of pieces joined at the end). With a
    known bound it is allocated once at that size: pages never written stay unallocated, so
    it costs only what is decoded, and it never has to be copied to grow."""

    def __init__(self, bound: int | None) -> None:
        self.buf = np.empty(bound if bound is not None else SAMPLE_RATE * 10, np.float32)
        self.size = 0

    def add(self, piece: np.ndarray) -> None:
        end = self.size + piece.size
        if end > self.buf.size:
            grown = np.empty(max(end, self.buf.size * 2), np.float32)
            grown[: self.size] = self.buf[: self.size]
            self.buf = grown
        self.buf[self.size:end] = piece
        self.size = end

    def result(self) -> np.ndarray:
        return self.buf[: self.size]


def _decode_16k(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    max_seconds: float | None,
    max_samples: int | None,
    name: str,
) -> tuple[np.ndarray, int]:
    """(16 kHz mono output, source samples per channel decoded), frame by frame."""
    rate = stream.codec_context.sample_rate
    if not rate:
        raise AudioDecodeError(f"{name}: unknown sample rate")
    # Packed (interleaved) float, layout kept: one buffer per frame whatever the channel
    # count. Planar frames of 8 or more channels crash PyAV's to_ndarray (SIGSEGV).
    to_packed = av.AudioResampler(format="flt", rate=rate)
    to_16k = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ") \
        if rate != SAMPLE_RATE else None
    limit = None if max_seconds is None else int(max_seconds * rate)
    # soxr may hold back and then flush a few hundred samples: room for a second more.
    out = _Output(None if max_seconds is None else int((max_seconds + 1) * SAMPLE_RATE))
    decoded = 0  # per channel
    budget_used = 0  # all channels

    def take(packed: av.AudioFrame) -> None:
        nonlocal decoded, budget_used
        mono = _downmix(packed)
        if not np.isfinite(mono).all():  # float PCM can spell NaN and infinity
            raise AudioDecodeError(f"{name}: the audio holds NaN or infinite samples")
        decoded += mono.size
        budget_used += mono.size * len(packed.layout.channels)
        if limit is not None and decoded > limit:
            raise AudioDecodeError(f"{name}: audio longer than {max_seconds:g} s")
        if max_samples is not None and budget_used > max_samples:
            raise AudioDecodeError(
                f"{name}: audio decodes to more than {max_samples} samples "
                f"({rate} Hz x {len(packed.layout.channels)} channels; the decode budget)")
        out.add(mono if to_16k is None else to_16k.resample_chunk(mono))

    for frame in container.decode(stream):
        for packed in to_packed.resample(frame):
            take(packed)
    for packed in to_packed.resample(None):
        take(packed)
    if to_16k is not None and decoded:
        out.add(to_16k.resample_chunk(np.zeros(0, np.float32), last=True))
    return out.result(), decoded


def _downmix(packed: av.AudioFrame) -> np.ndarray:
    """Packed float frame -> the mean of its channels."""
    block = packed.to_ndarray().reshape(-1, len(packed.layout.channels))
    return block.mean(axis=1, dtype=np.float64).astype(np.float32)
