"""MP4 output through PyAV's bundled FFmpeg: H.264 (libx264, yuv420p) at 25 fps plus AAC.

The audio starts at 0 with the first video frame; a file is written under a temporary name
and renamed into place by `atomic_mp4`, so an interrupted run never leaves a half file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from synctalk.audio.pcm import FPS, SAMPLE_RATE

AAC_FRAME = 1024  # samples per AAC frame
CRF = 20  # SyncTalk_2D's mux quality
PRESET = "veryfast"


class Mp4Writer:
    """Frames (BGR, any even or odd size) and one mono float track into an MP4."""

    def __init__(self, path: Path, width: int, height: int, audio: np.ndarray | None = None,
                 sample_rate: int = SAMPLE_RATE, fps: int = FPS, crf: int = CRF,
                 preset: str = PRESET) -> None:
        self.size = (width, height)
        self.even = (width + width % 2, height + height % 2)  # yuv420p needs even sides
        self.container = av.open(str(path), mode="w", format="mp4")
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width, self.video.height = self.even
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = Fraction(1, fps)
        self.video.options = {"crf": str(crf), "preset": preset}
        self.frames = 0
        if audio is not None and audio.size:
            self._write_audio(np.asarray(audio, np.float32), sample_rate)

    def _write_audio(self, audio: np.ndarray, rate: int) -> None:
        stream = self.container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        stream.bit_rate = 96_000
        stream.time_base = Fraction(1, rate)
        for start in range(0, audio.size, AAC_FRAME):
            piece = np.ascontiguousarray(audio[start : start + AAC_FRAME])[None, :]
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            self.container.mux(stream.encode(frame))
        self.container.mux(stream.encode(None))

    def write(self, bgr: np.ndarray) -> None:
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            raise ValueError(f"frame {self.frames}: expected {self.size[0]}x{self.size[1]}, "
                             f"got {bgr.shape[1]}x{bgr.shape[0]}")
        if self.even != self.size:
            bgr = cv2.copyMakeBorder(bgr, 0, self.even[1] - self.size[1], 0,
                                     self.even[0] - self.size[0], cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame.pts = self.frames
        self.container.mux(self.video.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        self.container.close()


@contextlib.contextmanager
def atomic_mp4(out: Path) -> Iterator[Path]:
    """A temporary path next to `out`; renamed to `out` on success, deleted on any failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.part{os.getpid()}.mp4")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
