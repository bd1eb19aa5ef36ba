"""The default head model, "landmark-warp/1": the photo's own mouth moves, by mesh warping.

The dlib 68 points of the photo, plus a fixed ring of anchors on the edge of the U-Net's
masked crop window, form a triangle mesh (`warp.MeshWarp`). Each frame moves the points:
- the upper lip and the upper teeth stay with the skull, rising a little for wide vowels;
- the lower lip, lower teeth and chin follow the jaw, which rotates about the ears: the chin
  drops most, the jaw line less the nearer it is to the ear, the mouth corners a little;
- a width factor < 1 (rounded lips) pulls the lips towards the middle and pouts them.
The gap between the inner lips is painted as a shaded mouth (`mouth.MouthPainter`). Every
anchor sits inside the mask, a few pixels in from the 5 px border SyncTalk_2D leaves visible,
so nothing in that border changes with the mouth (else the network reads the mouth state
from the border instead of from the audio). Opening 0 at width 1 is the photo itself.
"""

from __future__ import annotations

import numpy as np

from kernels.reference import CROP, MASK_COLS, MASK_ROWS, RING
from synctalk.avatar.boxes import params_to_boxes, raw_boxes
from training.synthetic.face import FaceRig
from training.synthetic.mouth import MouthPainter, MouthShape
from training.synthetic.render import HeadRenderer, HeadState
from training.synthetic.warp import MeshWarp, border_ring

WINDOW_MARGIN = 6  # px kept still inside the masked window (interpolation, box rounding)
EDGE_GAP = 8  # landmarks nearer than this to the still edge are left out of the mesh
ANCHOR_SPACING = 24.0
ROUND_IN = 0.6  # lips' horizontal scale = 1 - ROUND_IN * (1 - width)
POUT = 0.1  # outer lips move apart by POUT * (1 - width) * mouth width (protrusion)
UPPER_RISE = 0.08  # upper lip rise for a full, wide opening, share of the opening
CORNER_DROP = 0.25  # mouth corners' drop, share of the lower lip's
CHIN_DROP = 0.9  # chin drop, share of the lower lip's
LIPS = np.arange(48, 68)
UPPER_LIP = np.array([49, 50, 51, 52, 53, 61, 62, 63])
LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
CORNERS = np.array([48, 54, 60, 64])
JAW = np.arange(0, 17)
# Extra lower-lip points halfway between neighbouring landmarks, so the lips part in a curve.
MIDPOINTS = np.array([(64, 65), (65, 66), (66, 67), (67, 60), (54, 55), (55, 56), (56, 57),
                      (57, 58), (58, 59), (59, 48)])
# The inner lip contour, as rows of `contour`: left corner, upper lip, right corner, lower lip.
INNER = np.array([60, 61, 62, 63, 64, 68, 65, 69, 66, 70, 67, 71])


def still_window(rig: FaceRig) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in rig pixels: the part of the resting face's U-Net window under the
    mask, less a margin; the warp moves nothing outside it."""
    view = rig.landmarks - rig.view_origin
    box = params_to_boxes(raw_boxes(view[None]), hysteresis=0.0)[0].astype(np.float64)
    side = box[2] - box[0]

    def edge(index: float) -> float:
        return (index + RING + 0.5) * side / CROP - 0.5

    x0 = box[0] + edge(MASK_COLS[0]) + rig.view_origin[0] + WINDOW_MARGIN
    x1 = box[0] + edge(MASK_COLS[1] - 1) + rig.view_origin[0] - WINDOW_MARGIN
    y0 = box[1] + edge(MASK_ROWS[0]) + rig.view_origin[1] + WINDOW_MARGIN
    y1 = box[1] + edge(MASK_ROWS[1] - 1) + rig.view_origin[1] - WINDOW_MARGIN
    return int(np.ceil(x0)), int(np.ceil(y0)), int(np.floor(x1)) + 1, int(np.floor(y1)) + 1


class LandmarkHeadRenderer(HeadRenderer):
    """Renders HeadStates of one FaceRig by warping the photo's own lips and jaw."""

    def __init__(self, rig: FaceRig) -> None:
        super().__init__(rig)
        self.window = still_window(rig)
        x0, y0, x1, y1 = self.window
        lm = self._with_midpoints(rig.landmarks.astype(np.float64))
        gap = np.minimum.reduce([lm[:, 0] - x0, x1 - 1 - lm[:, 0], lm[:, 1] - y0, y1 - 1 - lm[:, 1]])
        self.points = np.flatnonzero(gap >= EDGE_GAP)  # landmarks that are mesh vertices
        self.mesh = MeshWarp(np.concatenate([lm[self.points], border_ring(self.window, ANCHOR_SPACING)]),
                             self.window)
        self.mouth = MouthPainter(rig.image, lm[INNER], self.max_open_px)
        hinge = float(lm[[0, 16], 1].mean())
        reach = np.clip((lm[JAW, 1] - hinge) / (rig.chin_y - hinge), 0, 1)
        taper = np.clip(gap[JAW] / (4 * EDGE_GAP), 0, 1)  # near the still edge, less
        self._jaw_share = CHIN_DROP * reach ** 2 * taper
        self._lens = self._lens_profile(lm)

    @staticmethod
    def _with_midpoints(points: np.ndarray) -> np.ndarray:
        """The 68 landmarks followed by the MIDPOINTS."""
        return np.concatenate([points, points[MIDPOINTS].mean(axis=1)])

    def _lens_profile(self, lm: np.ndarray) -> np.ndarray:
        """Per point, its share of the lip's vertical motion: 1 mid-lip, less to the corners."""
        centre = self.rig.mouth_centre_x
        inner = np.isin(np.arange(len(lm)), np.r_[60:68, 68:72])
        half = np.where(inner, self.rig.inner_mouth_width / 2, self.rig.mouth_width / 2)
        dx = np.clip(np.abs(lm[:, 0] - centre) / half, 0, 1)
        return CORNER_DROP + (1 - CORNER_DROP) * np.sqrt(1 - dx ** 2)

    def contour(self, state: HeadState) -> np.ndarray:
        """float64 [78,2]: where the 68 landmarks and the lower-lip MIDPOINTS move (rig pixels)."""
        lm = self.rig.landmarks.astype(np.float64)
        moved = lm.copy()
        opening = float(np.clip(state.opening, 0, 1))
        width = float(np.clip(state.width, 0.5, 1.0))
        drop = opening * self.max_open_px
        rise = UPPER_RISE * drop * (width - 0.5) * 2
        pout = POUT * (1 - width) * self.rig.mouth_width
        centre = self.rig.mouth_centre_x
        moved[LIPS, 0] = centre + (lm[LIPS, 0] - centre) * (1 - ROUND_IN * (1 - width))
        moved[UPPER_LIP, 1] -= rise * self._lens[UPPER_LIP]
        moved[[49, 50, 51, 52, 53], 1] -= pout * self._lens[[49, 50, 51, 52, 53]]
        moved[LOWER_LIP, 1] += drop * self._lens[LOWER_LIP]
        moved[[55, 56, 57, 58, 59], 1] += pout * self._lens[[55, 56, 57, 58, 59]]
        moved[CORNERS, 1] += CORNER_DROP * drop
        moved[JAW, 1] += drop * self._jaw_share
        # Midpoints ride between their neighbours, bowed down to the lens profile.
        mids = self._with_midpoints(moved)
        bow = self._lens[68:] - self._lens[MIDPOINTS].mean(axis=1)
        mids[68:, 1] += drop * bow
        return mids

    def vertices(self, contour: np.ndarray) -> np.ndarray:
        """The mesh's vertices for a moved `contour`: its mesh points, then the still anchors."""
        return np.concatenate([contour[self.points], self.mesh.vertices[len(self.points):]])

    def render(self, state: HeadState) -> np.ndarray:
        opening = float(np.clip(state.opening, 0, 1))
        width = float(np.clip(state.width, 0.5, 1.0))
        if opening * self.max_open_px <= 0.05 and width >= 1.0:
            return self.finish(self.rig.image.copy(), state)
        moved = self.contour(state)
        image = self.mesh.apply(self.rig.image, self.vertices(moved))
        lift = float(self.rig.landmarks[62, 1] - moved[62, 1])
        self.mouth.paint(image, MouthShape(moved[INNER], opening, -lift))
        return self.finish(image, state)
