"""The inside of an open mouth, painted between the warped inner lips.

Back to front: a dark cavity, darkest under the upper teeth and towards the corners; a
reddish tongue low in the mouth, shown for open vowels; a row of lower teeth just above the
lower lip for medium and large openings; the photo's own upper teeth, which move with the
upper lip. Every layer has soft, anti-aliased edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CAVITY_BGR = np.array([34, 26, 66], np.float32)
TONGUE_BGR = np.array([88, 86, 156], np.float32)
SUBPIXEL_BITS = 4
EDGE_SIGMA = 0.6  # px, softens every layer's edge
TONGUE_FROM, TONGUE_FULL = 0.25, 0.6  # openings where the tongue starts to show / shows fully
LOWER_TEETH_FROM, LOWER_TEETH_FULL = 0.35, 0.75
LIP_SEAM_PX = 2.0  # the photo's lower-lip landmarks sit this far below the teeth: covered
LOWER_TEETH_SHARE = 0.12  # height of the lower teeth row at full opening, share of max_open_px
LOWER_TOOTH_SHARE = 0.09  # width of one lower tooth, share of the inner mouth's width


@dataclass(frozen=True)
class MouthShape:
    """One frame's inner lip contour (dlib 60..67, rig pixels) and how far the jaw opened."""

    inner: np.ndarray  # float [K,2]: left corner, 3 upper lip points, right corner, lower lip
    opening: float  # 0..1
    teeth_shift: float  # px the upper teeth moved down (negative: up, with the upper lip)


@dataclass(frozen=True)
class _Area:
    """The patch being painted (rig pixels) and the open mouth's extent within it."""

    origin: np.ndarray  # (x, y) of the patch's top-left pixel
    size: tuple[int, int]  # rows, columns
    top: float  # upper lip's inner edge, mid-mouth
    bottom: float  # lower lip's inner edge, mid-mouth
    cx: float
    half: float  # half the inner mouth's width

    @property
    def gap(self) -> float:
        return max(self.bottom - self.top, 1.0)

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.size[0], dtype=np.float32)[:, None] + np.float32(self.origin[1])

    @property
    def cols(self) -> np.ndarray:
        return np.arange(self.size[1], dtype=np.float32)[None, :] + np.float32(self.origin[0])

    @property
    def side(self) -> np.ndarray:
        """0 mid-mouth .. 1 at a corner, per column."""
        return np.clip(np.abs(self.cols - self.cx) / self.half, 0, 1)


def _coverage(shape: tuple[int, int], polygon: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage 0..1 of `polygon` (rig pixels) over an image of `shape` at `origin`."""
    mask = np.zeros(shape, np.float32)
    pts = np.round((np.asarray(polygon, np.float64) - origin) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1.0, cv2.LINE_AA, SUBPIXEL_BITS)
    return cv2.GaussianBlur(mask, (0, 0), EDGE_SIGMA)


def _lowest(inner: np.ndarray) -> float:
    """Mean height of the lower lip's middle: its three lowest contour points."""
    return float(np.sort(inner[5:, 1])[-3:].mean())


def _ramp(x: float, start: float, full: float) -> float:
    t = float(np.clip((x - start) / (full - start), 0, 1))
    return t * t * (3 - 2 * t)


class MouthPainter:
    """Paints mouth interiors for one photo, whose closed-lip contour shows its upper teeth."""

    def __init__(self, photo: np.ndarray, inner: np.ndarray, max_open_px: float) -> None:
        self.photo = photo
        self.inner = np.asarray(inner, np.float64)
        self.max_open_px = max_open_px
        teeth = _coverage(photo.shape[:2], self.inner, np.zeros(2)) > 0.99
        self.teeth_bgr = np.median(photo[teeth], axis=0).astype(np.float32)

    def paint(self, image: np.ndarray, shape: MouthShape) -> None:
        """Paint the interior of `shape` into `image` (rig pixels, modified in place)."""
        inner = np.asarray(shape.inner, np.float64).copy()
        closed = _lowest(self.inner) - float(self.inner[[1, 2, 3], 1].mean())
        parted = _lowest(inner) - float(inner[[1, 2, 3], 1].mean()) - closed
        inner[5:, 1] += LIP_SEAM_PX * float(np.clip(parted / (2 * LIP_SEAM_PX), 0, 1))
        teeth = self.inner + [0.0, shape.teeth_shift]
        both = np.concatenate([inner, teeth])
        x0, y0 = np.floor(both.min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(both.max(axis=0)).astype(int) + 4
        area = _Area(np.array([x0, y0], np.float64), (y1 - y0, x1 - x0),
                     float(inner[[1, 2, 3], 1].mean()), _lowest(inner),
                     float(inner[[0, 4], 0].mean()), max(float(inner[4, 0] - inner[0, 0]) / 2, 1.0))
        layer = self._cavity(area)
        self._tongue(layer, area, _ramp(shape.opening, TONGUE_FROM, TONGUE_FULL))
        self._lower_teeth(layer, area, inner, _ramp(shape.opening, LOWER_TEETH_FROM, LOWER_TEETH_FULL))
        # The photo's upper teeth, moved with the upper lip; their lower edge softened a pixel.
        teeth[5:] -= [0.0, min(1.0, max(parted, 0.0))]
        mask = _coverage(area.size, teeth, area.origin)
        shift = np.float32([[1, 0, -x0], [0, 1, shape.teeth_shift - y0]])
        photo = cv2.warpAffine(self.photo, shift, (x1 - x0, y1 - y0), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        layer += (photo - layer) * mask[..., None]

        roi = image[y0:y1, x0:x1]
        alpha = _coverage(area.size, inner, area.origin)[..., None]
        roi[:] = np.clip(roi + (layer - roi) * alpha, 0, 255).astype(np.uint8)

    @staticmethod
    def _cavity(area: _Area) -> np.ndarray:
        """Dark cavity, darkest in the shadow of the upper teeth and towards the corners."""
        depth = np.clip((area.rows - area.top) / area.gap, 0, 1)
        shade = (0.45 + 0.55 * depth ** 1.5) * (1 - 0.35 * area.side ** 2)
        return np.broadcast_to(CAVITY_BGR * shade[..., None], (*area.size, 3)).copy()

    @staticmethod
    def _tongue(layer: np.ndarray, area: _Area, amount: float) -> None:
        """A tongue low in the mouth, its back in shadow; `amount` 0 hides it."""
        if amount <= 0:
            return
        mask = np.zeros(area.size, np.float32)
        one = 1 << SUBPIXEL_BITS
        centre = (round((area.cx - area.origin[0]) * one),
                  round((area.bottom - 0.15 * area.gap - area.origin[1]) * one))
        axes = (round(0.72 * area.half * one), round(0.38 * area.gap * one))
        cv2.ellipse(mask, centre, axes, 0, 180, 360, 1.0, -1, cv2.LINE_AA, SUBPIXEL_BITS)
        cv2.ellipse(mask, centre, (axes[0], axes[1] // 3), 0, 0, 180, 1.0, -1, cv2.LINE_AA,
                    SUBPIXEL_BITS)
        mask = cv2.GaussianBlur(mask, (0, 0), EDGE_SIGMA * 2) * amount
        light = 0.55 + 0.35 * np.clip((area.rows - (area.bottom - 0.55 * area.gap)) / (0.4 * area.gap), 0, 1)
        layer += (TONGUE_BGR * light[..., None] - layer) * mask[..., None]

    def _lower_teeth(self, layer: np.ndarray, area: _Area, inner: np.ndarray, amount: float) -> None:
        """A row of lower teeth rising from the lower lip's middle; `amount` 0 hides it."""
        if amount <= 0:
            return
        height = LOWER_TEETH_SHARE * self.max_open_px * amount
        lip = np.concatenate([inner[4:], inner[:1]])
        squeeze = np.clip(1 - ((lip[:, 0] - area.cx) / (0.7 * area.half)) ** 2, 0, 1)
        rim = np.stack([np.zeros_like(squeeze), squeeze], 1)
        mask = _coverage(area.size, np.concatenate([lip + rim, (lip - height * rim)[::-1]]), area.origin)
        # Separate teeth: a faint seam every LOWER_TOOTH_SHARE of the inner mouth's width.
        period = LOWER_TOOTH_SHARE * 2 * area.half
        seam = np.abs(((area.cols - area.cx) / period + 0.5) % 1 - 0.5) * period
        shadow = (0.92 - 0.2 * area.side) * (1 - 0.12 * np.exp(-((seam / 0.9) ** 2)))
        layer += (self.teeth_bgr * shadow[..., None] - layer) * mask[..., None]
