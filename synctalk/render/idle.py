"""The silence rule: a silent frame shows the avatar's idle motion with a closed mouth.

A frame is silent when its audio is not voiced (`FeatureFrame.voiced` false and its rms at
or below `synctalk.audio.levels.VOICED_RMS`). After `HANGOVER_FRAMES` silent frames in a row
the frame is *idle*: its audio window is replaced by the window the feature extractor gives
for digital silence, so the U-Net draws the closed mouth it learnt for pauses, while the
source frame still follows the ping-pong walk (head and eyes keep moving). The hangover
keeps the real features through short gaps inside speech (stop consonants, breaths), where
they already close the mouth at the right pace, so the mouth never snaps shut mid-word.
The rule reads only the current and past frames, so a live stream needs no extra delay.
"""

from __future__ import annotations

import threading

import numpy as np

from synctalk.audio.levels import VOICED_RMS
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.config import ModelsConfig
from synctalk.log import get_logger

# Silent frames in a row (120 ms) that still use their own features before the idle window.
HANGOVER_FRAMES = 3
_SILENCE_SECONDS = 2.0

log = get_logger("synctalk.render.idle")


def is_silent(voiced: bool, rms: float) -> bool:
    """Silent unless the client flagged the frame voiced or its level says so."""
    return not voiced and not rms > VOICED_RMS


class IdleRule:
    """Per-stream state of the silence rule: `step` once per frame, in index order."""

    def __init__(self, hangover: int = HANGOVER_FRAMES) -> None:
        if hangover < 0:
            raise ValueError("hangover must be >= 0")
        self.hangover = hangover
        self._silent_run = hangover  # a stream that starts silent is idle at once

    def step(self, voiced: bool, rms: float = 0.0) -> bool:
        """True when this frame is idle."""
        if is_silent(voiced, rms):
            self._silent_run += 1
        else:
            self._silent_run = 0
        return self._silent_run > self.hangover


_windows: dict[tuple, np.ndarray] = {}
_lock = threading.Lock()


def silence_window(mode: str, models: ModelsConfig) -> np.ndarray:
    """The audio window [*shape] float32 of a frame in the middle of a long digital silence,
    from the same extractor (and configuration) that makes the streams' features."""
    from synctalk.features import get_extractor

    key = (mode, models.model_dump_json())
    with _lock:
        if key not in _windows:
            extractor = get_extractor(mode, models)
            frames = extractor.extract(np.zeros(int(_SILENCE_SECONDS * SAMPLE_RATE), np.float32))
            window = np.ascontiguousarray(frames[len(frames) // 2], np.float32)
            window.flags.writeable = False
            _windows[key] = window
            log.info("idle.silence_window", mode=mode, shape=list(window.shape))
        return _windows[key]
