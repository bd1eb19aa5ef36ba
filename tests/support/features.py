"""Drivers for the streaming feature and mel code under test."""

from __future__ import annotations

import numpy as np

from synctalk.audio.mel_stream import MelStream


def stream_in_chunks(extractor, audio: np.ndarray, size: int,
                     trim: int = 0) -> tuple[list, list[int]]:
    """Frames from the streaming state, and the sample count at which each one came out."""
    stream = extractor.start_stream(trim)
    frames, seen_at = [], []
    for start in range(0, audio.size, size):
        got = stream.push(audio[start : start + size])
        frames += got
        seen_at += [min(start + size, audio.size)] * len(got)
    tail = stream.finish()
    return frames + tail, seen_at + [audio.size] * len(tail)


def signal(n: int, seed: int = 0) -> np.ndarray:
    """A chirp plus noise: energy in every band, so every filter matters."""
    t = np.arange(n) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (100 + 3000 * t) * t)
    noise = 0.05 * np.random.default_rng(seed).standard_normal(n)
    return (chirp + noise).astype(np.float32)


def drain(stream: MelStream, got: list[np.ndarray], start: int, stop: int) -> int:
    if stop > start:
        got.append(stream.get(start, stop).copy())
        stream.discard_before(stop)
    return max(start, stop)
