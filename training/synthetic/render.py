"""What every synthetic head model shares: the frame's state, the head's pose and blinks.

A head model (`jaw_drop.JawDropRenderer`, `landmark_head.LandmarkHeadRenderer`) animates the
mouth in the rig photo's pixels; `HeadRenderer.finish` then lowers a skin-coloured lid over
each eye and applies a small head motion (translation and a fraction of a degree of roll) to
the whole frame, the same way for every model, so old and new truth files share a pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.synthetic.face import FaceRig

MAX_OPEN_SHARE = 0.42  # widest lip gap, as a share of the mouth width
LASH_BGR = np.array([40, 35, 45], np.float32)


@dataclass(frozen=True)
class HeadState:
    """What one frame shows."""

    opening: float  # 0..1
    width: float = 1.0  # mouth width factor (rounded lips < 1)
    blink: float = 0.0  # 0 open .. 1 closed
    dx: float = 0.0  # head translation, output pixels
    dy: float = 0.0
    angle: float = 0.0  # head roll, degrees


class HeadRenderer:
    """Pose, blinks and coordinate mapping of one FaceRig; subclasses draw the mouth."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        self.max_open_px = MAX_OPEN_SHARE * rig.mouth_width
        self._skin = [self._lid_colour(range(36, 42)), self._lid_colour(range(42, 48))]
        self.centre = ((rig.face_box[:2] + rig.face_box[2:]) / 2).astype(np.float32)

    def render(self, state: HeadState) -> np.ndarray:
        raise NotImplementedError

    def _lid_colour(self, eye: range) -> np.ndarray:
        """Median colour of the skin in a ring around the eye (lid above, cheek below)."""
        pts = self.rig.landmarks[list(eye)]
        height = float(pts[:, 1].max() - pts[:, 1].min())
        mask = np.zeros(self.rig.image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        inner = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=max(1, round(0.4 * height)))
        outer = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=max(2, round(1.0 * height)))
        ring = (outer > 0) & (inner == 0)
        return np.median(self.rig.image[ring], axis=0).astype(np.float32)

    def affine(self, state: HeadState) -> np.ndarray:
        """2x3 matrix: rig image pixels -> output pixels."""
        m = cv2.getRotationMatrix2D((float(self.centre[0]), float(self.centre[1])), state.angle, 1.0)
        m[:, 2] += np.array([state.dx, state.dy]) - self.rig.view_origin
        return m

    def to_output(self, points: np.ndarray, state: HeadState) -> np.ndarray:
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        m = self.affine(state)
        return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)

    def face_box(self, state: HeadState) -> np.ndarray:
        """The detector's face box moved with the head (x0, y0, x1, y1), output pixels."""
        box = self.rig.face_box
        centre = self.to_output(self.centre, state)[0]
        half = (box[2:] - box[:2]) / 2
        return np.concatenate([centre - half, centre + half]).astype(np.float32)

    def finish(self, image: np.ndarray, state: HeadState) -> np.ndarray:
        """Blinks painted into `image` (rig pixels, modified in place), then the head pose."""
        if state.blink > 0.02:
            for k, eye in enumerate((range(36, 42), range(42, 48))):
                self._paint_lid(image, eye, self._skin[k], min(state.blink, 1.0))
        return cv2.warpAffine(image, self.affine(state), (self.rig.size, self.rig.size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def _paint_lid(self, image: np.ndarray, eye: range, skin: np.ndarray, amount: float) -> None:
        pts = self.rig.landmarks[list(eye)]
        x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 4
        roi = image[y0:y1, x0:x1]
        mask = np.zeros(roi.shape[:2], np.float32)
        poly = np.round((pts - [x0, y0]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [poly], 1.0, cv2.LINE_AA, 4)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        top, bottom = pts[:, 1].min() - y0, pts[:, 1].max() - y0 + 1
        edge = top + amount * (bottom - top)
        rows = np.arange(roi.shape[0], dtype=np.float32)[:, None]
        covered = np.clip(edge - rows + 0.5, 0, 1)
        alpha = cv2.GaussianBlur(mask * covered, (0, 0), 0.7)[..., None]
        lid = roi * (1 - alpha) + skin * alpha
        if amount > 0.3:
            lash = np.exp(-(((rows - edge) / 0.9) ** 2)) * mask * min(1.0, (amount - 0.3) * 2)
            lid = lid * (1 - lash[..., None]) + LASH_BGR * lash[..., None]
        roi[:] = np.clip(lid, 0, 255).astype(np.uint8)


def head_motion(num_frames: int, amplitude_px: float, seed: int, fps: int = 25) -> np.ndarray:
    """[N,3] (dx, dy, angle): slow drift from a few random sinusoids, within +-amplitude px
    (roll within +-amplitude/5 degrees). amplitude 0 is a perfectly still head."""
    out = np.zeros((num_frames, 3), np.float32)
    if amplitude_px <= 0 or num_frames == 0:
        return out
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    for col, amp in ((0, amplitude_px), (1, amplitude_px * 0.6), (2, amplitude_px / 5)):
        freqs = rng.uniform(0.05, 0.35, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        weights = rng.uniform(0.5, 1.0, 3)
        wave = sum(w * np.sin(2 * np.pi * f * t + p) for w, f, p in zip(weights, freqs, phases, strict=True))
        out[:, col] = amp * wave / weights.sum()
    return out


BLINK_SHAPE = np.array([0.35, 0.85, 1.0, 0.75, 0.35, 0.1], np.float32)


def blinks(num_frames: int, seed: int, fps: int = 25, every_s: tuple[float, float] = (2.5, 5.0)) -> np.ndarray:
    """Per-frame lid closure 0..1: a ~0.25 s blink every 2.5-5 s (random, seeded)."""
    rng = np.random.default_rng(seed + 1)
    out = np.zeros(num_frames, np.float32)
    t = rng.uniform(0.8, every_s[1])
    while (start := int(t * fps)) < num_frames:
        span = out[start: start + len(BLINK_SHAPE)]
        span[:] = np.maximum(span, BLINK_SHAPE[: len(span)])
        t += rng.uniform(*every_s)
    return out
