"""Prometheus metrics of the AudioFeatures service, on the default registry that
`synctalk.metrics_http` serves (one service per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from synctalk.audio.pcm import SAMPLE_RATE

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

CHUNK_SECONDS = Histogram(
    "synctalk_audio_features_chunk_seconds",
    "Compute time of one pushed batch of audio (the latency it adds to its frames)", ["mode"],
    buckets=_LATENCY_BUCKETS)
REAL_TIME_FACTOR = Histogram(
    "synctalk_audio_features_real_time_factor",
    "Compute time over the duration of the audio pushed, per batch (below 1: faster than "
    "real time)", ["mode"], buckets=_RTF_BUCKETS)
FRAMES = Counter("synctalk_audio_features_frames", "Feature frames sent", ["mode"])
AUDIO_SECONDS = Counter("synctalk_audio_features_audio_seconds", "Seconds of audio processed",
                        ["mode"])


def observe_push(mode: str, samples: int, seconds: float, frames: int) -> None:
    """Record one push of `samples` samples that took `seconds` and made `frames` frames."""
    audio_s = samples / SAMPLE_RATE
    CHUNK_SECONDS.labels(mode).observe(seconds)
    if audio_s > 0:
        REAL_TIME_FACTOR.labels(mode).observe(seconds / audio_s)
    AUDIO_SECONDS.labels(mode).inc(audio_s)
    FRAMES.labels(mode).inc(frames)
