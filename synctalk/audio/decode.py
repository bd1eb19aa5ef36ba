"""Decode whatever audio a user hands us (WAV, FLAC, MP3, OGG, the audio of an MP4, ...) to
the project's float32 16 kHz mono, in memory: PyAV's bundled FFmpeg decodes, channels are
averaged, soxr resamples."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from synctalk.audio.pcm import SAMPLE_RATE, resample


class AudioDecodeError(ValueError):
    """The input is not decodable audio, holds no audio, or is too long."""


def load_audio(
    source: str | Path | bytes, *, max_seconds: float | None = None
) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to float32 mono at 16 kHz.

    `max_seconds` stops decoding and raises AudioDecodeError once the audio runs longer,
    so an oversized upload costs no more than the limit.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioDecodeError("empty input")
        handle: io.BytesIO | str = io.BytesIO(bytes(source))
        name = "<bytes>"
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
            mono, rate = _decode_mono(container, stream, max_seconds, name)
    except AudioDecodeError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, EOFError, ValueError) as exc:
        # ValueError: PyAV's resampler refuses a frame whose layout or rate changed mid-stream.
        raise AudioDecodeError(f"{name}: cannot decode audio ({exc})") from exc
    if mono.size == 0:
        raise AudioDecodeError(f"{name}: the audio stream holds no samples")
    out = resample(mono, rate, SAMPLE_RATE)
    if out.size == 0:  # e.g. one sample at 48 kHz
        raise AudioDecodeError(f"{name}: the audio is shorter than one sample at 16 kHz")
    if not np.isfinite(out).all():  # float PCM can spell NaN and infinity
        raise AudioDecodeError(f"{name}: the audio holds NaN or infinite samples")
    return out


def _decode_mono(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    max_seconds: float | None,
    name: str,
) -> tuple[np.ndarray, int]:
    rate = stream.codec_context.sample_rate
    if not rate:
        raise AudioDecodeError(f"{name}: unknown sample rate")
    # Packed (interleaved) float, layout kept: one buffer per frame whatever the channel
    # count. Planar frames of 8 or more channels crash PyAV's to_ndarray (SIGSEGV).
    to_packed = av.AudioResampler(format="flt", rate=rate)
    limit = None if max_seconds is None else int(max_seconds * rate)
    pieces: list[np.ndarray] = []
    total = 0
    for frame in container.decode(stream):
        for packed in to_packed.resample(frame):
            pieces.append(_downmix(packed))
            total += pieces[-1].size
        if limit is not None and total > limit:
            raise AudioDecodeError(f"{name}: audio longer than {max_seconds:g} s")
    pieces.extend(_downmix(packed) for packed in to_packed.resample(None))
    mono = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if limit is not None and mono.size > limit:
        raise AudioDecodeError(f"{name}: audio longer than {max_seconds:g} s")
    return mono, rate


def _downmix(packed: av.AudioFrame) -> np.ndarray:
    """Packed float frame -> the mean of its channels."""
    block = packed.to_ndarray().reshape(-1, len(packed.layout.channels))
    return block.mean(axis=1, dtype=np.float64).astype(np.float32)
