"""Piecewise-affine image warp over a triangle mesh, inside one rectangle.

The mesh (a Delaunay triangulation of the source vertices) is built once; each frame moves
the vertices, every destination triangle is rasterised into a triangle-index image and each
pixel is mapped back through its triangle's affine map, then sampled with bicubic
interpolation (the warped face stays as sharp as the rest of the photo). Vertices on the
rectangle's edge must stay put: then nothing outside the rectangle changes, and the warp
fades to the identity at its edge.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

SUBPIXEL_BITS = 4


def border_ring(roi: tuple[int, int, int, int], spacing: float) -> np.ndarray:
    """float32 [K,2] points along the edge of `roi` (x0, y0, x1, y1; exclusive end), corners
    included, about `spacing` apart."""
    x0, y0, x1, y1 = (float(v) for v in roi)
    x1, y1 = x1 - 1, y1 - 1
    nx = max(1, int(np.ceil((x1 - x0) / spacing)))
    ny = max(1, int(np.ceil((y1 - y0) / spacing)))
    xs = np.linspace(x0, x1, nx + 1)
    ys = np.linspace(y0, y1, ny + 1)[1:-1]
    ring = [np.stack([xs, np.full_like(xs, y)], 1) for y in (y0, y1)]
    ring += [np.stack([np.full_like(ys, x), ys], 1) for x in (x0, x1)]
    return np.concatenate(ring).astype(np.float32)


class MeshWarp:
    """A triangle mesh over `vertices` (rig pixels) that warps `roi` of an image."""

    def __init__(self, vertices: np.ndarray, roi: tuple[int, int, int, int]) -> None:
        self.vertices = np.asarray(vertices, np.float64)
        self.roi = roi
        self.triangles = Delaunay(self.vertices).simplices.astype(np.int64)
        x0, y0, x1, y1 = roi
        self._xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        self._ys = np.arange(y0, y1, dtype=np.float32)[:, None]

    def folded(self, moved: np.ndarray) -> bool:
        """Whether moving the vertices to `moved` turns any triangle over."""
        def signed(points: np.ndarray) -> np.ndarray:
            a, b, c = (points[self.triangles[:, k]] for k in range(3))
            return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        return bool(np.any(signed(self.vertices) * signed(np.asarray(moved, np.float64)) <= 0))

    def apply(self, image: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """A copy of `image` whose roi shows the mesh with its vertices at `moved`."""
        moved = np.asarray(moved, np.float64)
        x0, y0, x1, y1 = self.roi
        tri = self.triangles
        # Per triangle, the affine map destination -> source: src = [x, y, 1] @ coef.
        dst = np.concatenate([moved[tri], np.ones((len(tri), 3, 1))], axis=2)
        coef = np.linalg.solve(dst, self.vertices[tri]).astype(np.float32)  # [T,3,2]
        index = np.full((y1 - y0, x1 - x0), len(tri), np.int32)
        scale = 1 << SUBPIXEL_BITS
        corners = np.round((moved[tri] - [x0, y0]) * scale).astype(np.int32)
        for k in range(len(tri)):
            cv2.fillConvexPoly(index, corners[k], k, cv2.LINE_8, SUBPIXEL_BITS)
        identity = np.array([[[1, 0], [0, 1], [0, 0]]], np.float32)
        coef = np.concatenate([coef, identity])
        c = coef[index]
        map_x = c[..., 0, 0] * self._xs + c[..., 1, 0] * self._ys + c[..., 2, 0]
        map_y = c[..., 0, 1] * self._xs + c[..., 1, 1] * self._ys + c[..., 2, 1]
        out = image.copy()
        out[y0:y1, x0:x1] = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC,
                                      borderMode=cv2.BORDER_REFLECT)
        return out
