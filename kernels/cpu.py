"""Fast CPU path of the crop/mask and paste-back kernels, used by the renderer and training
on machines without a GPU. Same interface and geometry as `kernels.reference`, within one
grey level of it.

OpenCV's `resize` (INTER_LINEAR) does the sampling: it uses the same pixel-centre mapping
and box clamping as the reference, and its 8-bit weights carry 11 fractional bits.
`remap`/`warpAffine` would take precomputed maps but round source positions to 1/32 px,
which on sharp edges is several grey levels off the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from kernels.reference import (
    CROP,
    DEFAULT_FEATHER,
    RING,
    WINDOW,
    crop_mask_batch,
    feather_axis,
    paste_back_batch,
    visible,
)

NAME = "cpu"
_INV255 = np.float32(1.0 / 255.0)


def padded_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box's pixels [side_y, side_x, 3]; parts outside the frame repeat its border."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = frame.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return frame[y0:y1, x0:x1]
    vx0, vy0, vx1, vy1 = visible(box, frame.shape)
    if vx1 > vx0 and vy1 > vy0:
        return cv2.copyMakeBorder(
            frame[vy0:vy1, vx0:vx1],
            vy0 - y0,
            y1 - vy1,
            vx0 - x0,
            x1 - vx1,
            cv2.BORDER_REPLICATE,
        )
    rows = np.clip(np.arange(y0, y1), 0, h - 1)
    cols = np.clip(np.arange(x0, x1), 0, w - 1)
    return frame[rows][:, cols]


def resized_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box resized to CROP x CROP, uint8 HWC."""
    return cv2.resize(padded_crop(frame, box), (CROP, CROP), interpolation=cv2.INTER_LINEAR)


def _window_into(frame: np.ndarray, box: np.ndarray, dst: np.ndarray) -> None:
    win = resized_crop(frame, box)[RING : RING + WINDOW, RING : RING + WINDOW]
    np.multiply(win.transpose(2, 0, 1), _INV255, out=dst, casting="same_kind")


def crop_mask(frames: Sequence[np.ndarray], boxes: np.ndarray, out: np.ndarray | None = None,
              dtype: type = np.float32) -> np.ndarray:
    """U-Net input [B,6,320,320] in 0-1 BGR: the window, then the window with its inside blanked."""
    return crop_mask_batch(_window_into, frames, boxes, out, dtype)


@lru_cache(maxsize=256)
def _alpha(
    side_y: int, side_x: int, rows: tuple[int, int], cols: tuple[int, int], feather: float
) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, 1 - alpha) float32 over the visible box; rows/cols are box-relative [lo, hi)."""
    ay = feather_axis(rows[0], rows[1], side_y, feather, rows[0], rows[1] - rows[0])
    ax = feather_axis(cols[0], cols[1], side_x, feather, cols[0], cols[1] - cols[0])
    alpha = np.outer(ay, ax).astype(np.float32)
    rest = (1.0 - alpha).astype(np.float32)
    alpha.flags.writeable = False
    rest.flags.writeable = False
    return alpha, rest


def paste_one(frame: np.ndarray, box: np.ndarray, pred: np.ndarray, feather: float) -> None:
    """Blend one prediction [3,320,320] into one frame, in place."""
    vx0, vy0, vx1, vy1 = visible(box, frame.shape)
    if vx1 <= vx0 or vy1 <= vy0:
        return
    x0, y0, x1, y1 = (int(v) for v in box)
    img = resized_crop(frame, box).astype(np.float32)
    np.multiply(
        pred.transpose(1, 2, 0),
        np.float32(255.0),
        out=img[RING : RING + WINDOW, RING : RING + WINDOW],
    )
    new = cv2.resize(img, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    new = new[vy0 - y0 : vy1 - y0, vx0 - x0 : vx1 - x0]
    alpha, rest = _alpha(
        y1 - y0, x1 - x0, (vy0 - y0, vy1 - y0), (vx0 - x0, vx1 - x0), float(feather)
    )
    region = frame[vy0:vy1, vx0:vx1]
    blended = cv2.blendLinear(new, region.astype(np.float32), alpha, rest)
    region[...] = cv2.convertScaleAbs(blended)


def paste_back(frames: Sequence[np.ndarray], boxes: np.ndarray, pred: np.ndarray,
               feather: float = DEFAULT_FEATHER) -> None:
    """Blend the predicted faces [B,3,320,320] (0-1 BGR) into the frames, in place."""
    paste_back_batch(paste_one, frames, boxes, pred, feather)
