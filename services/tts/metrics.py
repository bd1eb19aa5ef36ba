"""Prometheus metrics of the TTS service, on the default registry that
`synctalk.metrics_http` serves (one service per process)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

_RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)

REAL_TIME_FACTOR = Histogram(
    "synctalk_tts_real_time_factor",
    "Synthesis time over the duration of the audio made, per sentence (below 1: faster than "
    "real time)", ["engine"], buckets=_RTF_BUCKETS)
FIRST_AUDIO = Histogram(
    "synctalk_tts_first_audio_seconds",
    "First text piece of a stream received -> its first audio chunk ready", ["engine"],
    buckets=_LATENCY_BUCKETS)
SENTENCES = Counter("synctalk_tts_sentences", "Sentences synthesized", ["engine"])
AUDIO_SECONDS = Counter("synctalk_tts_audio_seconds", "Seconds of audio synthesized",
                        ["engine"])


class FirstAudioClock:
    """One stream's first-audio time: from its first text piece to its first sentence's
    audio, recorded once."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self._since: float | None = None
        self._recorded = False

    def text_arrived(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def audio_ready(self) -> None:
        if self._since is not None and not self._recorded:
            FIRST_AUDIO.labels(self.engine).observe(time.perf_counter() - self._since)
            self._recorded = True
