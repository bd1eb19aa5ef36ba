"""One stream's synthesis state: options, the running sample count and sentence index.

`speak` is blocking (an ONNX call or a subprocess) and runs in a worker thread; it returns the
sentence's audio already resampled, converted to s16le and cut into AudioChunks whose
`start_sample` continues from the previous sentence.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from services.tts import metrics
from services.tts.voices import Voice
from synctalk.audio.pcm import float_to_s16le, resample
from synctalk.log import get_logger
from synctalk.rpc.errors import invalid
from synctalk.rpc.gen.lipsync.v1 import common_pb2, tts_pb2

log = get_logger("services.tts")

MIN_SPEED, MAX_SPEED = 0.25, 4.0
MIN_RATE, MAX_RATE = 8_000, 48_000


@dataclass(frozen=True)
class SynthesisOptions:
    speed: float
    deterministic: bool
    sample_rate: int

    @classmethod
    def from_config(cls, config: tts_pb2.SynthesizeConfig, default_rate: int) -> SynthesisOptions:
        """Validated options; 0 means the default for speed and sample rate."""
        speed = config.speed or 1.0
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise invalid("config.speed", f"must be within {MIN_SPEED:g}..{MAX_SPEED:g}, got {speed:g}")
        rate = config.sample_rate or default_rate
        if not MIN_RATE <= rate <= MAX_RATE:
            raise invalid("config.sample_rate", f"must be within {MIN_RATE}..{MAX_RATE} Hz, got {rate}")
        return cls(float(speed), config.deterministic, rate)


class Synthesizer:
    """Turns sentences into AudioChunks for one stream, in order."""

    def __init__(self, voice: Voice, options: SynthesisOptions, chunk_seconds: float = 1.0) -> None:
        self.voice = voice
        self.options = options
        self.chunk_samples = max(1, int(options.sample_rate * chunk_seconds))
        self.next_sample = 0
        self.sentence_index = 0

    def speak(self, sentence: str) -> list[common_pb2.AudioChunk]:
        started = time.perf_counter()
        audio = self.voice.synthesize(sentence, self.options.speed, self.options.deterministic)
        audio = resample(audio, self.voice.native_sample_rate, self.options.sample_rate)
        pcm = float_to_s16le(audio)
        n = len(pcm) // 2
        parts = max(1, math.ceil(n / self.chunk_samples))
        chunks = [
            common_pb2.AudioChunk(
                pcm=pcm[2 * i * self.chunk_samples : 2 * (i + 1) * self.chunk_samples],
                sample_rate=self.options.sample_rate,
                start_sample=self.next_sample + i * self.chunk_samples,
                sentence_index=self.sentence_index,
                text=sentence,
                end_of_sentence=i == parts - 1,
            )
            for i in range(parts)
        ]
        elapsed = time.perf_counter() - started
        seconds = n / self.options.sample_rate
        log.info("tts.sentence", index=self.sentence_index, chars=len(sentence), samples=n,
                 synth_ms=round(elapsed * 1000, 1), rtf=round(elapsed / seconds, 4) if seconds else None)
        engine = self.voice.engine
        metrics.SENTENCES.labels(engine).inc()
        metrics.AUDIO_SECONDS.labels(engine).inc(seconds)
        if seconds:
            metrics.REAL_TIME_FACTOR.labels(engine).observe(elapsed / seconds)
        self.next_sample += n
        self.sentence_index += 1
        return chunks
