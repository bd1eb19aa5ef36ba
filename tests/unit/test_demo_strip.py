"""The docs strip tool's choices: frames spread over the speech at loud moments, and a mouth
tile of a fixed size from any crop box (also one at the frame's edge)."""

from __future__ import annotations

import numpy as np

from training.demo_strip import TILE, mouth_tile, pick_frames


def test_frames_are_spread_over_the_speech_at_loud_moments() -> None:
    rng = np.random.default_rng(0)
    audio = np.zeros(16000 * 4, np.float32)
    audio[16000:48000] = 0.3 * rng.standard_normal(32000).astype(np.float32)
    audio[20000:20640] *= 3  # a loud frame: 20000 / 640 = frame 31
    picks = pick_frames(audio, 5)
    assert len(picks) == 5 and picks == sorted(picks)
    assert all(25 <= p < 75 for p in picks)  # within the speech (frames 25..74)
    assert 31 in picks


def test_mouth_tiles_have_one_size() -> None:
    frame = np.zeros((512, 512, 3), np.uint8)
    for box in ([150, 200, 350, 400], [0, 0, 120, 120], [400, 380, 512, 512]):
        assert mouth_tile(frame, np.array(box)).shape == (TILE, TILE, 3)
