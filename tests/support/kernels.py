"""Random frames and crop boxes for the kernel tests."""

from __future__ import annotations

import numpy as np


def random_batch(
    rng: np.random.Generator, n: int, max_side: int = 420
) -> tuple[list[np.ndarray], np.ndarray]:
    """Noise frames of mixed odd/even sizes; boxes of odd and even sides, some crossing the
    frame border, one fully inside, one upscaled (side < 328) and one downscaled."""
    frames, boxes = [], []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(41, 301, 2))
        frames.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        side = int(rng.integers(7, max_side))
        if i == 0:
            side = min(h, w) - 1
            x0, y0 = 0, 1
        else:
            x0 = int(rng.integers(-side // 2, w - 1))
            y0 = int(rng.integers(-side // 2, h - 1))
        boxes.append((x0, y0, x0 + side, y0 + side))
    return frames, np.array(boxes, dtype=np.int32)
