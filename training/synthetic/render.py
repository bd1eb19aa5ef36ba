"""Drawing the synthetic talking head, one frame per mouth state.

The jaw drop is a warp of the lower face: every pixel below the line where the lips part
moves down by `opening x weight`. At the lips the weight is lens-shaped (1 in the middle, 0
at the corners, so the corners stay joined); a lip's thickness lower it is 1 across the jaw,
and it fades out sideways within the cheeks and downwards at the chin, so skin stretches
instead of tearing. The fades are short on purpose: the jaw must not move the edges of the
U-Net's crop window, which the mask leaves visible (SyncTalk_2D's 5 px border); a jaw that
moved them told the network the mouth's state through the border (the border predicted the
opening at r = 0.995), so it learned to read the mouth from there instead of from the
audio. The lens that opens between the lips is painted as a dark mouth interior. Blinks
lower a skin-coloured lid over each eye. A small head motion (translation and a fraction of
a degree of roll) is applied last, to the whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.synthetic.face import FaceRig

MAX_OPEN_SHARE = 0.42
WIDTH_LEVELS = (0.7, 0.85, 1.0)  # widest jaw drop, as a share of the mouth width
CHEEK_FADE = 0.15  # sideways fade beyond the mouth corners, share of the jaw's half width
CHIN_FADE = 0.5  # downward fade below the chin, share of the mouth-line-to-chin distance
INTERIOR_BGR = np.array([38, 28, 72], np.float32)
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


class TalkingHeadRenderer:
    """Renders HeadStates of one FaceRig; also maps rig coordinates to output coordinates."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        self.max_open_px = MAX_OPEN_SHARE * rig.mouth_width
        h, w = rig.image.shape[:2]
        self._grid_x, self._grid_y = np.meshgrid(np.arange(w, dtype=np.float32),
                                                 np.arange(h, dtype=np.float32))
        self.half_inner = 0.55 * rig.inner_mouth_width
        self.lower_lip = float(rig.landmarks[57, 1]) - rig.mouth_line_y
        self._weights = [self._jaw_weight(w) for w in WIDTH_LEVELS]
        self._skin = [self._lid_colour(range(36, 42)), self._lid_colour(range(42, 48))]
        self.centre = ((rig.face_box[:2] + rig.face_box[2:]) / 2).astype(np.float32)

    def _jaw_weight(self, width: float) -> np.ndarray:
        """Downward displacement per pixel for a full opening, with lips narrowed to `width`."""
        rig = self.rig
        x, y = self._grid_x, self._grid_y
        line = rig.mouth_line_y
        dx = np.abs(x - rig.mouth_centre_x)
        # Sideways: the jaw under the mouth moves, the cheeks' outer parts do not.
        beyond = np.maximum(dx - rig.mouth_width / 2, 0)
        sideways = np.exp(-((beyond / (CHEEK_FADE * rig.jaw_half_width)) ** 2))
        # At the lips the opening is lens-shaped (corners stay joined); a lip's thickness
        # lower down, the jaw moves as one piece.
        profile = np.sqrt(np.clip(1 - (dx / (self.half_inner * width)) ** 2, 0, 1))
        lip = np.clip((y - line) / (2.5 * max(self.lower_lip, 2.0)), 0, 1)
        lip = lip * lip * (3 - 2 * lip)
        shape = profile + (1 - profile) * lip
        below = np.clip(y - line + 0.5, 0, 1)
        # Downwards: below the chin the skin stretches back to rest.
        downwards = np.clip(1 - (y - rig.chin_y) / (CHIN_FADE * (rig.chin_y - line)), 0, 1)
        return (sideways * shape * below * downwards).astype(np.float32)

    def _weight(self, width: float) -> np.ndarray:
        """Jaw weight for a width factor, interpolated between the precomputed levels."""
        w = float(np.clip(width, WIDTH_LEVELS[0], WIDTH_LEVELS[-1]))
        k = int(np.searchsorted(WIDTH_LEVELS, w, side="right")) - 1
        k = min(k, len(WIDTH_LEVELS) - 2)
        a = (w - WIDTH_LEVELS[k]) / (WIDTH_LEVELS[k + 1] - WIDTH_LEVELS[k])
        if a <= 1e-3:
            return self._weights[k]
        if a >= 1 - 1e-3:
            return self._weights[k + 1]
        return (1 - a) * self._weights[k] + a * self._weights[k + 1]

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

    def render(self, state: HeadState) -> np.ndarray:
        open_px = float(np.clip(state.opening, 0, 1)) * self.max_open_px
        image = self.rig.image
        if open_px > 0.05:
            image = cv2.remap(image, self._grid_x, self._grid_y - open_px * self._weight(state.width),
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            self._paint_interior(image, open_px, state.width)
        else:
            image = image.copy()
        if state.blink > 0.02:
            for k, eye in enumerate((range(36, 42), range(42, 48))):
                self._paint_lid(image, eye, self._skin[k], min(state.blink, 1.0))
        return cv2.warpAffine(image, self.affine(state), (self.rig.size, self.rig.size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def _paint_interior(self, image: np.ndarray, open_px: float, width: float) -> None:
        """Dark mouth interior over the lens the jaw warp opened between the lips."""
        rig = self.rig
        half = self.half_inner * float(np.clip(width, WIDTH_LEVELS[0], 1.0))
        cx, line = rig.mouth_centre_x, rig.mouth_line_y
        xs = np.linspace(-half, half, 33)
        gap = open_px * np.sqrt(np.clip(1 - (xs / half) ** 2, 0, 1))
        top = np.stack([cx + xs, np.full_like(xs, line - 0.5)], axis=1)
        bottom = np.stack([cx + xs, line - 0.5 + gap], axis=1)[::-1]
        pad = 4
        x0, y0 = int(cx - half) - pad, int(line) - pad
        x1, y1 = int(cx + half) + pad + 1, int(line + open_px) + pad + 1
        roi = image[y0:y1, x0:x1]
        mask = np.zeros(roi.shape[:2], np.float32)
        poly = np.round((np.concatenate([top, bottom]) - [x0, y0]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [poly], 1.0, cv2.LINE_AA, 4)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.7)[..., None]
        # Darker towards the back of the mouth, lighter where the lips begin.
        rows = (np.arange(roi.shape[0], dtype=np.float32) + y0 - line)[:, None, None]
        depth = 0.6 + 0.4 * np.clip(np.abs(rows - open_px / 2) / max(open_px / 2, 1.0), 0, 1)
        roi[:] = np.clip(roi * (1 - mask) + INTERIOR_BGR * depth * mask, 0, 255).astype(np.uint8)

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
