"""A piper voice (ONNX VITS): loaded once, one ONNX call per sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class PiperTTSVoice:
    """Wraps `piper.PiperVoice`; `speed` divides the voice's length scale, deterministic zeroes the noise."""

    engine = "piper"

    def __init__(self, voice_id: str, model_path: str | Path, config_path: str | Path | None = None) -> None:
        from piper import PiperVoice

        model_path = Path(model_path)
        config_path = Path(config_path) if config_path else model_path.with_name(model_path.name + ".json")
        if not model_path.is_file():
            raise FileNotFoundError(f"piper model {model_path} does not exist")
        self.id = voice_id
        self.voice = PiperVoice.load(model_path, config_path=config_path, use_cuda=False)
        self.native_sample_rate = int(self.voice.config.sample_rate)
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        self.language = str(meta.get("language", {}).get("code") or self.voice.config.espeak_voice)

    def synthesize(self, text: str, speed: float, deterministic: bool) -> np.ndarray:
        """float32 mono at `native_sample_rate`; piper may split `text` further, the parts are joined."""
        from piper import SynthesisConfig

        config = SynthesisConfig(
            length_scale=self.voice.config.length_scale / speed,
            noise_scale=0.0 if deterministic else None,
            noise_w_scale=0.0 if deterministic else None,
        )
        parts = [chunk.audio_float_array for chunk in self.voice.synthesize(text, config)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
