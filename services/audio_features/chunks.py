"""Checks on each incoming AudioChunk: 16 kHz, whole 16-bit samples, contiguous, within the
stream-length limit. Violations become INVALID_ARGUMENT / RESOURCE_EXHAUSTED with the field."""

from __future__ import annotations

import numpy as np

from synctalk.audio.pcm import SAMPLE_RATE, s16le_to_float
from synctalk.rpc.errors import exhausted, invalid
from synctalk.rpc.gen.lipsync.v1 import common_pb2


class ChunkCursor:
    """Validates chunks in arrival order and turns them into float samples."""

    def __init__(self, max_seconds: float) -> None:
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.max_seconds = max_seconds
        self.position = 0  # samples accepted so far = the next chunk's start_sample
        self.count = 0

    def accept(self, chunk: common_pb2.AudioChunk) -> np.ndarray:
        where = f"chunk[{self.count}]"
        self.count += 1
        if chunk.sample_rate not in (0, SAMPLE_RATE):
            raise invalid(f"{where}.sample_rate",
                          f"must be {SAMPLE_RATE} (or 0), got {chunk.sample_rate}")
        if len(chunk.pcm) % 2:
            raise invalid(f"{where}.pcm", f"odd byte count {len(chunk.pcm)} for s16le samples")
        if chunk.start_sample != self.position:
            raise invalid(f"{where}.start_sample",
                          f"expected {self.position} (contiguous), got {chunk.start_sample}")
        samples = s16le_to_float(chunk.pcm)
        self.position += samples.size
        if self.position > self.max_samples:
            raise exhausted(f"stream longer than max_stream_seconds={self.max_seconds:g}")
        return samples
