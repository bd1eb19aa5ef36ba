"""The legacy head model, "jaw-drop/1": the photo's lower face drops, its smile stays fixed.

The jaw drop is a warp of the lower face: every pixel below the line where the lips part
moves down by `opening x weight`. At the lips the weight is lens-shaped (1 in the middle, 0
at the corners, so the corners stay joined); a lip's thickness lower it is 1 across the jaw,
and it fades out sideways within the cheeks and downwards at the chin, so skin stretches
instead of tearing. The fades are short on purpose: the jaw must not move the edges of the
U-Net's crop window, which the mask leaves visible (SyncTalk_2D's 5 px border); a jaw that
moved them told the network the mouth's state through the border (the border predicted the
opening at r = 0.995), so it learned to read the mouth from there instead of from the
audio. The lens that opens between the lips is painted as a dark mouth interior.

Kept unchanged so ground truth of avatars made with it (the bundled demo) can be re-rendered.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.synthetic.face import FaceRig
from training.synthetic.render import HeadRenderer, HeadState

WIDTH_LEVELS = (0.7, 0.85, 1.0)  # widest jaw drop, as a share of the mouth width
CHEEK_FADE = 0.15  # sideways fade beyond the mouth corners, share of the jaw's half width
CHIN_FADE = 0.5  # downward fade below the chin, share of the mouth-line-to-chin distance
INTERIOR_BGR = np.array([38, 28, 72], np.float32)


class JawDropRenderer(HeadRenderer):
    """Renders HeadStates of one FaceRig by dropping the lower face under a fixed smile."""

    def __init__(self, rig: FaceRig) -> None:
        super().__init__(rig)
        h, w = rig.image.shape[:2]
        self._grid_x, self._grid_y = np.meshgrid(np.arange(w, dtype=np.float32),
                                                 np.arange(h, dtype=np.float32))
        self.half_inner = 0.55 * rig.inner_mouth_width
        self.lower_lip = float(rig.landmarks[57, 1]) - rig.mouth_line_y
        self._weights = [self._jaw_weight(w) for w in WIDTH_LEVELS]

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

    def render(self, state: HeadState) -> np.ndarray:
        open_px = float(np.clip(state.opening, 0, 1)) * self.max_open_px
        image = self.rig.image
        if open_px > 0.05:
            image = cv2.remap(image, self._grid_x, self._grid_y - open_px * self._weight(state.width),
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            self._paint_interior(image, open_px, state.width)
        else:
            image = image.copy()
        return self.finish(image, state)

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
