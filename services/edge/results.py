"""The finished result of an utterance as an mp4 (H.264 + AAC), for download after streaming.

While an utterance streams, its JPEG frames and their audio are kept in memory (up to
`max_frames`); when it completes they move to the store, and the mp4 is encoded on the
first download (in a thread) and kept instead of the frames. The store is bounded in count,
bytes and age, so results never pile up, and nothing touches the disk.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

from services.edge.orchestrator import Frame
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.rpc.gen.lipsync.v1 import common_pb2

FPS = 25


MAX_RECORDED_BYTES = 48 * 1024 * 1024


@dataclass
class ResultRecorder:
    """Collects one utterance's frames; gives up (no result) past `max_frames` or
    `max_bytes`, so a long or high-resolution stream costs no more memory than that."""

    max_frames: int
    max_bytes: int = MAX_RECORDED_BYTES
    frames: list[bytes] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    overflow: bool = False
    size: int = 0

    def add(self, frame: Frame) -> None:
        if self.overflow:
            return
        self.size += len(frame.image) + len(frame.audio)
        if (frame.encoding == common_pb2.IMAGE_ENCODING_RAW_RGB
                or len(self.frames) >= self.max_frames or self.size > self.max_bytes):
            self.overflow = True
            self.frames.clear()
            self.audio.clear()
            return
        self.frames.append(frame.image)
        self.audio += frame.audio

    @property
    def usable(self) -> bool:
        return not self.overflow and bool(self.frames)


@dataclass
class _Entry:
    created: float
    frames: list[bytes] | None
    audio: bytes
    mp4: bytes | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def size(self) -> int:
        return len(self.mp4) if self.mp4 is not None else len(self.audio) + sum(
            len(f) for f in self.frames or ())


class ResultStore:
    """Last results by session id, bounded by count, total bytes and age."""

    def __init__(self, max_results: int = 16, max_bytes: int = 256 * 1024 * 1024,
                 ttl_s: float = 1800.0) -> None:
        self.max_results = max_results
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def put(self, session_id: str, recorder: ResultRecorder) -> bool:
        if not recorder.usable:
            return False
        self._entries.pop(session_id, None)
        self._entries[session_id] = _Entry(time.monotonic(), list(recorder.frames),
                                           bytes(recorder.audio))
        self._trim()
        return session_id in self._entries

    def __contains__(self, session_id: str) -> bool:
        self._trim()
        return session_id in self._entries

    async def mp4(self, session_id: str) -> bytes | None:
        """The session's last result as mp4 bytes; None if there is none (or it expired)."""
        self._trim()
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        async with entry.lock:
            if entry.mp4 is None:
                frames = entry.frames or []
                entry.mp4 = await asyncio.to_thread(encode_mp4, frames, entry.audio)
                entry.frames = None
                entry.audio = b""
                self._trim()
        return entry.mp4

    def _trim(self) -> None:
        now = time.monotonic()
        for sid, entry in list(self._entries.items()):
            if now - entry.created > self.ttl_s:
                del self._entries[sid]
        while len(self._entries) > self.max_results:
            self._entries.popitem(last=False)
        while self._entries and sum(e.size for e in self._entries.values()) > self.max_bytes:
            self._entries.popitem(last=False)


def encode_mp4(jpegs: list[bytes], pcm: bytes, fps: int = FPS) -> bytes:
    """JPEG frames at `fps` and 16 kHz mono s16le audio -> mp4 bytes (H.264 yuv420p + AAC)."""
    first = _decode(jpegs[0])
    height, width = first.shape[:2]
    width_even, height_even = width - width % 2, height - height % 2
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = width_even, height_even
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "20", "preset": "veryfast"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for i, jpeg in enumerate(jpegs):
            image = first if i == 0 else _decode(jpeg)
            if image.shape[:2] != (height, width):
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(image[:height_even, :width_even], format="bgr24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = np.frombuffer(pcm, "<i2")
        step = 1024
        for offset in range(0, len(samples), step):
            piece = samples[offset : offset + step]
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = offset
            frame.time_base = Fraction(1, SAMPLE_RATE)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return out.getvalue()


def _decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a result frame is not a decodable JPEG")
    return image
