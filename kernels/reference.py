"""Exact float64 NumPy reference of the crop/mask and paste-back kernels: the truth that the
fast CPU path and the CUDA kernels are tested against. Slow on purpose: plain, readable
array arithmetic, one frame at a time.

Geometry (shared by every backend, see docs/kernels.md):
- a box (x0, y0, x1, y1) has exclusive ends; it is resized to CROP x CROP and the U-Net sees
  the WINDOW x WINDOW square at offset RING inside it;
- bilinear sampling with pixel-centre alignment: src = (dst + 0.5) * scale - 0.5, clamped to
  the box ([0, side - 1]); the two taps are then clamped to the frame, so a box that crosses
  the frame border repeats the border pixels;
- paste-back samples the CROP-space image (prediction inside the window, source in the ring)
  for every frame pixel of the box and blends it in with `feather_alpha`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CROP = 328
WINDOW = 320
RING = (CROP - WINDOW) // 2
MASK_ROWS = (5, 310)
MASK_COLS = (5, 315)
DEFAULT_FEATHER = 0.08


def check_inputs(frames: Sequence[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    """Validate a batch; return the boxes as int64 [B,4] (float boxes, e.g. smoothed ones, are
    rounded to whole pixels). Errors name the bad item so a service can turn them into
    INVALID_ARGUMENT with a field path."""
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes: expected shape [B,4], got {list(b.shape)}")
    if np.issubdtype(b.dtype, np.floating):
        if not np.isfinite(b).all():
            raise ValueError("boxes: not finite")
        b = np.rint(b)
    elif not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"boxes: expected numbers, got {b.dtype}")
    if len(frames) != b.shape[0]:
        raise ValueError(f"boxes: {b.shape[0]} boxes for {len(frames)} frames")
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frames[{i}]: expected HxWx3 uint8, got {list(f.shape)} {f.dtype}")
        if f.shape[0] < 1 or f.shape[1] < 1:
            raise ValueError(f"frames[{i}]: empty frame {list(f.shape)}")
    b = b.astype(np.int64)
    for i, (x0, y0, x1, y1) in enumerate(b):
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"boxes[{i}]: empty box ({x0}, {y0}, {x1}, {y1})")
    return b


def check_pred(pred: np.ndarray, batch: int) -> None:
    shape = tuple(pred.shape)
    if shape != (batch, 3, WINDOW, WINDOW):
        raise ValueError(f"pred: expected shape [{batch},3,{WINDOW},{WINDOW}], got {list(shape)}")


def source_coords(dst: np.ndarray, side: int, dst_size: int) -> np.ndarray:
    """Box-relative source coordinate of each destination index for a side -> dst_size resize."""
    scale = side / dst_size
    return np.clip((dst + 0.5) * scale - 0.5, 0.0, side - 1.0)


def _taps(coord: np.ndarray, origin: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame-clamped tap indices and the weight of the second tap."""
    base = np.floor(coord)
    w = coord - base
    i0 = np.clip(origin + base.astype(np.int64), 0, limit - 1)
    i1 = np.clip(origin + base.astype(np.int64) + 1, 0, limit - 1)
    return i0, i1, w


def sample(frame: np.ndarray, box: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Bilinear samples [len(gy), len(gx), 3] of the frame at box-relative coordinates."""
    h, w = frame.shape[:2]
    y0, y1, wy = _taps(gy, int(box[1]), h)
    x0, x1, wx = _taps(gx, int(box[0]), w)
    r0 = frame[y0].astype(np.float64)
    r1 = frame[y1].astype(np.float64)
    wy = wy[:, None, None]
    wx = wx[None, :, None]
    top = r0[:, x0] * (1 - wx) + r0[:, x1] * wx
    bottom = r1[:, x0] * (1 - wx) + r1[:, x1] * wx
    return top * (1 - wy) + bottom * wy


def crop_window(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The WINDOW x WINDOW x 3 float64 (0-255) window of the box resized to CROP."""
    idx = np.arange(RING, RING + WINDOW, dtype=np.float64)
    gy = source_coords(idx, int(box[3] - box[1]), CROP)
    gx = source_coords(idx, int(box[2] - box[0]), CROP)
    return sample(frame, box, gy, gx)


# Writes a frame's window, 0-1 CHW [3,WINDOW,WINDOW], into the given view of the output.
WindowInto = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
# Blends one prediction [3,WINDOW,WINDOW] into one frame, in place: (frame, box, pred, feather).
PasteOne = Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]


def crop_mask_batch(window_into: WindowInto, frames: Sequence[np.ndarray], boxes: np.ndarray,
                    out: np.ndarray | None, dtype: type) -> np.ndarray:
    """The batch loop of every host backend's `crop_mask`; the backend samples the windows."""
    b = check_inputs(frames, boxes)
    shape = (len(frames), 6, WINDOW, WINDOW)
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out: expected shape {list(shape)}, got {list(out.shape)}")
    for i, frame in enumerate(frames):
        window_into(frame, b[i], out[i, :3])
        out[i, 3:] = out[i, :3]
        out[i, 3:, MASK_ROWS[0] : MASK_ROWS[1], MASK_COLS[0] : MASK_COLS[1]] = 0
    return out


def paste_back_batch(paste_one: PasteOne, frames: Sequence[np.ndarray], boxes: np.ndarray,
                     pred: np.ndarray, feather: float) -> None:
    """The batch loop of every host backend's `paste_back`; the backend blends each frame."""
    b = check_inputs(frames, boxes)
    p = np.asarray(pred)
    check_pred(p, len(frames))
    if feather < 0:
        raise ValueError(f"feather: must be >= 0, got {feather}")
    for i, frame in enumerate(frames):
        paste_one(frame, b[i], p[i], feather)


def _window_into(frame: np.ndarray, box: np.ndarray, dst: np.ndarray) -> None:
    dst[...] = crop_window(frame, box).transpose(2, 0, 1) / 255.0


def crop_mask(frames: Sequence[np.ndarray], boxes: np.ndarray, out: np.ndarray | None = None,
              dtype: type = np.float32) -> np.ndarray:
    """U-Net input [B,6,320,320] in 0-1 BGR: the window, then the window with its inside blanked."""
    return crop_mask_batch(_window_into, frames, boxes, out, dtype)


def feather_axis(
    lo: int, hi: int, side: int, feather: float, origin: int, count: int
) -> np.ndarray:
    """Alpha along one axis for the pixels origin..origin+count-1 of the visible box [lo, hi).

    Alpha is 0 over the ring band (the pixels the ring samples read, so the CUDA kernel can
    paste in place without a race), then rises as a raised cosine over feather * side pixels.
    Distances are measured from the visible box (the box clipped to the frame).
    """
    x = np.arange(origin, origin + count, dtype=np.float64)
    d = np.minimum(x - lo + 0.5, hi - x - 0.5)
    margin = ring_margin(side)
    width = feather * side
    if width <= 0:
        return (d > margin).astype(np.float64)
    t = np.clip((d - margin) / width, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def ring_margin(side: int) -> float:
    """Width in frame pixels of the band whose pixels the ring samples may read, plus slack."""
    return 3.5 * side / CROP + 1.5


def visible(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The box clipped to the frame: (vx0, vy0, vx1, vy1), possibly empty."""
    h, w = shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def feather_alpha(box: np.ndarray, shape: tuple[int, ...], feather: float) -> np.ndarray:
    """Blend weight for every pixel of the visible box, [vy1 - vy0, vx1 - vx0]."""
    vx0, vy0, vx1, vy1 = visible(box, shape)
    sx, sy = int(box[2] - box[0]), int(box[3] - box[1])
    ay = feather_axis(vy0, vy1, sy, feather, vy0, vy1 - vy0)
    ax = feather_axis(vx0, vx1, sx, feather, vx0, vx1 - vx0)
    return ay[:, None] * ax[None, :]


def _crop_space_taps(
    pixels: np.ndarray, origin: int, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = source_coords(pixels - origin, CROP, side)
    base = np.floor(u)
    return base.astype(np.int64), np.minimum(base.astype(np.int64) + 1, CROP - 1), u - base


def crop_space_image(frame: np.ndarray, box: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The CROP x CROP x 3 image (0-255) that paste-back resamples: pred in the window, the
    resized source in the ring."""
    idx = np.arange(CROP, dtype=np.float64)
    gy = source_coords(idx, int(box[3] - box[1]), CROP)
    gx = source_coords(idx, int(box[2] - box[0]), CROP)
    img = sample(frame, box, gy, gx)
    img[RING : RING + WINDOW, RING : RING + WINDOW] = (
        np.asarray(pred, dtype=np.float64).transpose(1, 2, 0) * 255.0
    )
    return img


def paste_one(frame: np.ndarray, box: np.ndarray, pred: np.ndarray, feather: float) -> None:
    vx0, vy0, vx1, vy1 = visible(box, frame.shape)
    if vx1 <= vx0 or vy1 <= vy0:
        return
    img = crop_space_image(frame, box, pred)
    ty0, ty1, wy = _crop_space_taps(np.arange(vy0, vy1), int(box[1]), int(box[3] - box[1]))
    tx0, tx1, wx = _crop_space_taps(np.arange(vx0, vx1), int(box[0]), int(box[2] - box[0]))
    wy = wy[:, None, None]
    wx = wx[None, :, None]
    top = img[ty0][:, tx0] * (1 - wx) + img[ty0][:, tx1] * wx
    bottom = img[ty1][:, tx0] * (1 - wx) + img[ty1][:, tx1] * wx
    new = top * (1 - wy) + bottom * wy
    alpha = feather_alpha(box, frame.shape, feather)[..., None]
    src = frame[vy0:vy1, vx0:vx1].astype(np.float64)
    blended = alpha * new + (1 - alpha) * src
    frame[vy0:vy1, vx0:vx1] = np.clip(np.floor(blended + 0.5), 0, 255).astype(np.uint8)


def paste_back(frames: Sequence[np.ndarray], boxes: np.ndarray, pred: np.ndarray,
               feather: float = DEFAULT_FEATHER) -> None:
    """Blend the predicted faces [B,3,320,320] (0-1 BGR) into the frames, in place."""
    paste_back_batch(paste_one, frames, boxes, pred, feather)
