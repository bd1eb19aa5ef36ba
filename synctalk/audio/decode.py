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
            mono, rate = _decode_mono(container, container.streams.audio[0], max_seconds, name)
    except (av.FFmpegError, UnicodeDecodeError, EOFError) as exc:
        raise AudioDecodeError(f"{name}: cannot decode audio ({exc})") from exc
    if mono.size == 0:
        raise AudioDecodeError(f"{name}: the audio stream holds no samples")
    return resample(mono, rate, SAMPLE_RATE)


def _decode_mono(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    max_seconds: float | None,
    name: str,
) -> tuple[np.ndarray, int]:
    rate = stream.rate or stream.codec_context.sample_rate
    if not rate:
        raise AudioDecodeError(f"{name}: unknown sample rate")
    to_planar = av.AudioResampler(format="fltp", rate=rate)  # float, layout kept
    limit = None if max_seconds is None else int(max_seconds * rate)
    pieces: list[np.ndarray] = []
    total = 0
    for frame in container.decode(stream):
        for planar in to_planar.resample(frame):
            pieces.append(_downmix(planar))
            total += pieces[-1].size
        if limit is not None and total > limit:
            raise AudioDecodeError(f"{name}: audio longer than {max_seconds:g} s")
    pieces.extend(_downmix(planar) for planar in to_planar.resample(None))
    mono = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if limit is not None and mono.size > limit:
        raise AudioDecodeError(f"{name}: audio longer than {max_seconds:g} s")
    return mono, rate


def _downmix(planar: av.AudioFrame) -> np.ndarray:
    """Planar float frame -> the mean of its channels."""
    block = planar.to_ndarray().reshape(len(planar.layout.channels), -1)
    return block.mean(axis=0, dtype=np.float64).astype(np.float32)
