"""Phonemes -> mouth opening over time.

piper speaks through espeak-ng's IPA phonemes, one code point each (diphthongs come as two:
"o", "ʊ"), and reports how many samples each one lasted. Each phoneme gets a jaw opening in
0..1 from a small viseme table (closed lips for p/b/m, wide for open vowels); the resulting
step curve is smoothed (coarticulation: Gaussian, sigma 40 ms, so a full opening takes about
0.1 s) and sampled at the middle of each 40 ms video frame's audio slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synctalk.avatar.boxes import gaussian_smooth

# Jaw opening 0..1 and mouth width factor (rounded lips < 1) per phoneme.
_GROUPS: list[tuple[str, float, float]] = [
    # silence, pauses and punctuation: closed
    ("^ $ _ , . ! ? ; : — - …", 0.0, 1.0),
    # bilabials: lips pressed together
    ("p b m", 0.0, 1.0),
    # labiodentals: lower lip to the upper teeth
    ("f v", 0.08, 1.0),
    # dentals and alveolars
    ("θ ð", 0.2, 1.0),
    ("t d n l s z ɾ ɬ", 0.22, 1.0),
    ("ɹ r ɻ", 0.25, 0.85),
    # post-alveolars: slightly rounded
    ("ʃ ʒ", 0.25, 0.8),
    # velars, glottal, palatal glide
    ("k ɡ g ŋ x", 0.32, 1.0),
    ("h ʔ", 0.35, 1.0),
    ("j", 0.25, 1.0),
    ("w", 0.15, 0.7),
    # vowels
    ("a ɑ ɒ æ", 1.0, 1.0),
    ("ɐ ʌ", 0.75, 1.0),
    ("ɛ e", 0.65, 1.0),
    ("ə ɚ ɜ ᵻ", 0.5, 1.0),
    ("ɪ i", 0.35, 1.0),
    ("ɔ o", 0.7, 0.75),
    ("ʊ u", 0.35, 0.7),
]
VISEMES: dict[str, tuple[float, float]] = {
    ph: (opening, width) for names, opening, width in _GROUPS for ph in names.split()
}
SPACE = (0.0, 1.0)  # a word gap: closed unless smoothing carries the neighbours over
UNKNOWN = (0.3, 1.0)
# Marks that take the shape of a neighbour: stress before a vowel, length after it.
NEXT_SHAPE = {"ˈ", "ˌ"}
PREVIOUS_SHAPE = {"ː", "ˑ"}
SMOOTH_S = 0.04
TRACK_HZ = 200  # resolution of the internal step curve


@dataclass(frozen=True)
class Phone:
    phoneme: str
    start: int  # samples, at the speech's sample rate
    end: int


def phone_shapes(phones: Sequence[Phone]) -> list[tuple[float, float]]:
    """(opening, width) per phone, stress and length marks resolved to their neighbours."""
    shapes: list[tuple[float, float] | None] = []
    for ph in phones:
        if ph.phoneme in NEXT_SHAPE or ph.phoneme in PREVIOUS_SHAPE:
            shapes.append(None)
        elif ph.phoneme == " ":
            shapes.append(SPACE)
        else:
            shapes.append(VISEMES.get(ph.phoneme, UNKNOWN))
    resolved: list[tuple[float, float]] = []
    for k, ph in enumerate(phones):
        shape = shapes[k]
        if shape is None:
            step = 1 if ph.phoneme in NEXT_SHAPE else -1
            j = k + step
            while 0 <= j < len(phones) and shapes[j] is None:
                j += step
            shape = shapes[j] if 0 <= j < len(phones) else SPACE
        resolved.append(shape or SPACE)
    return resolved


def step_curve(phones: Sequence[Phone], sample_rate: int, num_samples: int,
               rate: int = TRACK_HZ) -> tuple[np.ndarray, np.ndarray]:
    """Opening and width as step curves sampled at `rate` Hz over `num_samples` of audio."""
    n = max(1, int(np.ceil(num_samples / sample_rate * rate)))
    opening = np.zeros(n, np.float32)
    width = np.ones(n, np.float32)
    for ph, (o, w) in zip(phones, phone_shapes(phones), strict=True):
        a = int(round(ph.start / sample_rate * rate))
        b = max(a + 1, int(round(ph.end / sample_rate * rate)))
        opening[a:b] = o
        width[a:b] = w
    return opening, width


def frame_track(phones: Sequence[Phone], sample_rate: int, num_samples: int, num_frames: int,
                fps: int = 25, smooth_s: float = SMOOTH_S,
                loudness: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per video frame (opening 0..1, width factor), at the middle of each frame's audio.

    `loudness` (per frame, 0..1) scales the opening by 0.6..1, so loud syllables open wider."""
    opening, width = step_curve(phones, sample_rate, num_samples)
    sigma = smooth_s * TRACK_HZ
    opening = gaussian_smooth(opening, sigma)
    width = gaussian_smooth(width, sigma)
    t = (np.arange(num_frames) + 0.5) / fps * TRACK_HZ
    grid = np.arange(len(opening))
    frame_open = np.interp(t, grid, opening).astype(np.float32)
    frame_width = np.interp(t, grid, width).astype(np.float32)
    if loudness is not None:
        frame_open *= 0.6 + 0.4 * np.clip(np.asarray(loudness, np.float32)[:num_frames], 0, 1)
    return np.clip(frame_open, 0, 1), np.clip(frame_width, 0.5, 1.0)


def frame_loudness(audio: np.ndarray, sample_rate: int, num_frames: int, fps: int = 25) -> np.ndarray:
    """RMS per video frame, scaled so the 95th percentile of voiced frames is 1."""
    hop = sample_rate / fps
    rms = np.zeros(num_frames, np.float32)
    for i in range(num_frames):
        piece = audio[int(i * hop): int((i + 1) * hop)]
        rms[i] = float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) if piece.size else 0.0
    voiced = rms[rms > 1e-4]
    top = float(np.percentile(voiced, 95)) if voiced.size else 1.0
    return np.clip(rms / max(top, 1e-6), 0, 1)
