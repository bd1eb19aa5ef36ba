"""Reading a user's video with PyAV: what it holds (probe) and its frames resampled to 25 fps.

Any container and frame rate FFmpeg reads is accepted, variable frame rate included: output
frame i shows the source frame whose timestamp is nearest to i / 25 s (SyncTalk_2D re-encodes
with ffmpeg's fps filter, which picks frames the same way). A rotation stored in the stream's
display matrix (phones) is applied, so frames come out upright.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

OUT_FPS = 25


class VideoError(ValueError):
    """The file is not a readable video with sound."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int  # after rotation
    height: int
    duration: float  # seconds, of the video stream
    source_fps: float
    has_audio: bool
    rotation: int  # degrees counter-clockwise, as stored
    audio_offset: float  # first audio sample time minus first video frame time, seconds


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, EOFError) as exc:
        raise VideoError(f"{path}: not a readable video file ({exc})") from exc


def _stream_seconds(stream: av.stream.Stream, container: av.container.InputContainer) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def probe(path: Path) -> VideoInfo:
    """Check that `path` holds a decodable video stream and an audio stream; VideoError if not."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            kind = "an audio-only file" if container.streams.audio else "a file without streams"
            raise VideoError(f"{path}: no video stream ({kind})")
        vstream = container.streams.video[0]
        try:
            first = next(container.decode(vstream), None)
        except (av.FFmpegError, EOFError) as exc:
            raise VideoError(f"{path}: the video stream cannot be decoded ({exc})") from exc
        if first is None:
            raise VideoError(f"{path}: the video stream holds no frames")
        rotation = int(first.rotation or 0)
        width, height = first.width, first.height
        if rotation % 180:
            width, height = height, width
        rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
        source_fps = float(rate) if rate else 0.0
        duration = _stream_seconds(vstream, container)
        video_start = first.time or 0.0
        has_audio = bool(container.streams.audio)
        audio_offset = 0.0
        if has_audio:
            audio_offset = _first_time(path, video_start)
    return VideoInfo(path, width, height, duration, source_fps, has_audio, rotation, audio_offset)


def _first_time(path: Path, video_start: float) -> float:
    """Start of the decoded audio relative to the first video frame (0 if unknown)."""
    with _open(path) as container:
        try:
            frame = next(container.decode(container.streams.audio[0]), None)
        except (av.FFmpegError, EOFError) as exc:
            raise VideoError(f"{path}: the audio stream cannot be decoded ({exc})") from exc
        if frame is None:
            raise VideoError(f"{path}: the audio stream holds no samples")
        return (frame.time - video_start) if frame.time is not None else 0.0


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    r = rotation % 360
    if r == 90:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if r == 180:
        return cv2.rotate(image, cv2.ROTATE_180)
    if r == 270:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    return image


def frames_at_25fps(path: Path, fps: int = OUT_FPS) -> Iterator[tuple[int, np.ndarray]]:
    """(i, BGR uint8 frame) for i = 0, 1, ...: the source frame nearest to t = i / fps, times
    counted from the first frame; the last frame is held until the stream's end."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        step = 1.0 / float(rate) if rate else 1.0 / fps
        t0: float | None = None
        prev: tuple[float, av.VideoFrame] | None = None
        i = 0
        n_decoded = 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else n_decoded * step
                n_decoded += 1
                if t0 is None:
                    t0 = t
                t -= t0
                if prev is not None and t <= prev[0]:
                    continue  # duplicate or out-of-order timestamp
                while i / fps <= t:
                    target = i / fps
                    use = prev if prev is not None and abs(prev[0] - target) <= abs(t - target) else None
                    chosen = use[1] if use is not None else frame
                    yield i, _upright(chosen.to_ndarray(format="bgr24"), int(chosen.rotation or 0))
                    i += 1
                prev = (t, frame)
        except (av.FFmpegError, EOFError) as exc:
            raise VideoError(f"{path}: decoding failed after {n_decoded} frames ({exc})") from exc
        if prev is None:
            return
        last_t, last = prev
        duration = float(last.duration * last.time_base) if last.duration and last.time_base else step
        end = last_t + duration
        image = None
        while i / fps < end - 1e-6:
            if image is None:
                image = _upright(last.to_ndarray(format="bgr24"), int(last.rotation or 0))
            yield i, image
            i += 1


def expected_frames(duration: float, fps: int = OUT_FPS) -> int:
    """Output frame count for a stream of `duration` seconds."""
    return max(0, math.ceil(duration * fps - 1e-6))
