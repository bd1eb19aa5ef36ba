"""What an utterance is configured with and what it yields: its settings, its frames, and
the audio timeline each frame takes its sound from."""

from __future__ import annotations

from dataclasses import dataclass

from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME
from synctalk.rpc.gen.lipsync.v1 import common_pb2

FRAME_BYTES = SAMPLES_PER_FRAME * 2
CHUNK_SAMPLES = SAMPLE_RATE // 2  # uploads go downstream in 0.5 s chunks


@dataclass(frozen=True)
class Frame:
    """A rendered frame with the audio that plays with it."""

    index: int
    pts_ms: int
    image: bytes
    encoding: int
    width: int
    height: int
    audio: bytes  # 640 samples, s16le, 16 kHz mono
    source_frame: int
    idle: bool
    render_latency_s: float  # feature frame sent to the renderer -> video frame back


@dataclass(frozen=True)
class UtteranceConfig:
    avatar: str
    feature_mode: str
    voice: str = ""
    encoding: int = common_pb2.IMAGE_ENCODING_JPEG
    jpeg_quality: int = 0
    start_frame: int = 0
    # Added to the renderer's frame numbers, so a session's frames count on across utterances.
    index_offset: int = 0
    # Live input (gRPC Animate): when input pauses this long, pad silence so the last frames
    # (held back by the feature look-ahead) come out instead of waiting for more audio.
    tail_flush_s: float | None = None
    lookahead_frames: int = 8
    # Context rows left out of each frame's features (`x-feature-trim`; live input).
    feature_trim: int = 0
    stream_timeout_s: float = 660.0
    # Text input: speech past this many samples ends the utterance with a clear 422 (the
    # stream limit) rather than running into the renderer's frame cap ("busy").
    max_speech_samples: int | None = None
    # Stall deadlines (services.stall_probe_s, stage_timeout_s, first_frame_timeout_s).
    stall_probe_s: float = 1.0
    stage_timeout_s: float = 30.0
    first_frame_timeout_s: float = 60.0


class UtteranceInterrupted(Exception):
    """The utterance was cancelled (client gone, barge-in, explicit cancel)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Stats:
    first_frame_at: float | None = None  # monotonic time the first frame came back
    frames: int = 0


class PcmTimeline:
    """The utterance's audio as it went downstream; frame i plays samples [640 i, 640 i + 640)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._first_frame = 0
        self.samples = 0

    def append(self, pcm: bytes) -> None:
        self._buf += pcm
        self.samples += len(pcm) // 2

    def take(self, index: int) -> bytes:
        """The 1280 bytes of frame `index` (zero-padded past the end); earlier audio is dropped."""
        drop = index - self._first_frame
        if drop > 0:
            del self._buf[: drop * FRAME_BYTES]
            self._first_frame = index
        piece = bytes(self._buf[:FRAME_BYTES])
        return piece + b"\0" * (FRAME_BYTES - len(piece))
