"""Crop boxes from 68-point landmarks, smoothed over time.

SyncTalk_2D's rule (on its 110-point PFLD landmarks): x from the jaw contour point at eye
height on the left (#1) to the one on the right (#31), y from mid-nose (#52) down by the same
width: a square from the middle of the nose to below the chin, cheek to cheek. On dlib's
68 points the jaw contour has 17 points where PFLD has 33, so PFLD #1 / #31 sit halfway
between dlib 0-1 / 15-16; PFLD's mid-nose #52 is dlib's nose-bridge point 29.

SyncTalk_2D uses each frame's raw box, so landmark jitter makes the crop (and the pasted
face) shake. Here the box centre, top and side are median-filtered (spikes) and then
Gaussian-smoothed over time (zero phase: the box does not lag a moving head), then rounded
with a little hysteresis (a value must move 0.8 px from its integer before the integer
changes, so sub-pixel wobble does not flip it back and forth). A still head's box moves by
under 2 px from frame to frame.
"""

from __future__ import annotations

import numpy as np

MEDIAN_FRAMES = 5
POSITION_SIGMA = 2.0  # frames (80 ms at 25 fps)
SIZE_SIGMA = 4.0  # the face's size changes more slowly than its position
HYSTERESIS = 0.3  # px beyond the rounding midpoint before an integer coordinate changes


def _pad(x: np.ndarray, radius: int) -> np.ndarray:
    """Extend axis 0 by point reflection (keeps a linear trend: no lag at the ends), or by
    repeating the end values when the series is too short to reflect."""
    widths = [(radius, radius)] + [(0, 0)] * (x.ndim - 1)
    if len(x) > radius:
        return np.pad(x, widths, mode="reflect", reflect_type="odd")
    return np.pad(x, widths, mode="edge")


def gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 (radius 4 sigma)."""
    x = np.asarray(x, np.float64)
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    radius = max(1, int(4 * sigma + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = _pad(x, radius)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0)
    return windows @ taps


def median_smooth(x: np.ndarray, size: int) -> np.ndarray:
    """Running median along axis 0 over `size` (odd) frames."""
    x = np.asarray(x, np.float64)
    if size <= 1 or len(x) < 2:
        return x.copy()
    radius = size // 2
    padded = _pad(x, radius)
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0), axis=-1)


def raw_boxes(landmarks: np.ndarray) -> np.ndarray:
    """float64 [N,3] (centre x, top y, side) of the crop rule for landmarks [N,68,2]."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks: expected [N,68,2], got {list(lm.shape)}")
    left = (lm[:, 0, 0] + lm[:, 1, 0]) / 2
    right = (lm[:, 15, 0] + lm[:, 16, 0]) / 2
    side = np.maximum(right - left, 1.0)
    return np.stack([(left + right) / 2, lm[:, 29, 1], side], axis=1)


def smooth_params(params: np.ndarray, position_sigma: float = POSITION_SIGMA,
                  size_sigma: float = SIZE_SIGMA, median_frames: int = MEDIAN_FRAMES) -> np.ndarray:
    """Temporal smoothing of [N,3] (centre x, top y, side); edges extend the first/last value."""
    out = np.asarray(params, np.float64).copy()
    if len(out) < 2:
        return out
    out = median_smooth(out, median_frames)
    for col, sigma in ((0, position_sigma), (1, position_sigma), (2, size_sigma)):
        out[:, col] = gaussian_smooth(out[:, col], sigma)
    return out


def sticky_round(x: np.ndarray, hysteresis: float = HYSTERESIS) -> np.ndarray:
    """Round a series to integers, keeping the previous integer while the value stays within
    0.5 + hysteresis of it."""
    x = np.asarray(x, np.float64)
    out = np.empty(len(x), np.int64)
    current = None
    for i, v in enumerate(x):
        if current is None or abs(v - current) > 0.5 + hysteresis:
            current = int(np.rint(v))
        out[i] = current
    return out


def params_to_boxes(params: np.ndarray, hysteresis: float = HYSTERESIS) -> np.ndarray:
    """[N,3] (centre x, top y, side) -> int32 [N,4] square boxes (x0, y0, x1, y1), exclusive."""
    p = np.asarray(params, np.float64)
    side = np.maximum(sticky_round(p[:, 2], hysteresis), 2)
    x0 = sticky_round(p[:, 0] - p[:, 2] / 2, hysteresis)
    y0 = sticky_round(p[:, 1], hysteresis)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.int32)


def crop_boxes(landmarks: np.ndarray, smooth: bool = True) -> np.ndarray:
    """int32 [N,4] crop boxes for landmarks [N,68,2]: the crop rule, smoothed over time."""
    params = raw_boxes(landmarks)
    if not smooth:
        return params_to_boxes(params, hysteresis=0.0)
    return params_to_boxes(smooth_params(params))


def fill_missing(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Landmarks of frames without a usable face, linearly interpolated between the nearest
    frames that have one (held constant before the first and after the last)."""
    lm = np.asarray(landmarks, np.float32)
    found = np.asarray(found, bool)
    if found.all():
        return lm.copy()
    if not found.any():
        raise ValueError("no frame has a face")
    idx = np.flatnonzero(found)
    flat = lm.reshape(len(lm), -1)
    filled = np.empty_like(flat)
    everywhere = np.arange(len(lm))
    for c in range(flat.shape[1]):
        filled[:, c] = np.interp(everywhere, idx, flat[idx, c])
    return filled.reshape(lm.shape)


def frame_ranges(indices: np.ndarray) -> str:
    """Frame numbers as compact ranges: [3,4,5,9] -> "3-5, 9"."""
    idx = sorted(int(i) for i in np.asarray(indices).reshape(-1))
    parts: list[str] = []
    start = prev = None
    for i in idx:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)
