"""The face photo the synthetic talking head is made from, scaled and located once.

The photo is enlarged so the face fills about a third of the output frame (so the crop box
is large enough for the U-Net's 328 px crop), and dlib's 68 landmarks are taken on the
enlarged image: they place the lips, jaw, chin and eyes that the renderer animates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from synctalk.avatar.landmarks import DlibLandmarker
from synctalk.config import REPO_ROOT

DEFAULT_FACE = REPO_ROOT / "assets" / "faces" / "astronaut.jpg"
FACE_SHARE = 0.36  # detector face box width / output size
FACE_CENTRE_Y = 0.42  # where the face box centre sits in the output, as a share of its height


@dataclass
class FaceRig:
    """The enlarged photo, its landmarks and face box (in its pixels), and the output window."""

    image: np.ndarray  # BGR uint8
    landmarks: np.ndarray  # float32 [68,2]
    face_box: np.ndarray  # float32 (x0, y0, x1, y1)
    size: int  # output frames are size x size
    view_origin: np.ndarray  # float32 (x, y): the output's top-left corner in image pixels

    @property
    def mouth_line_y(self) -> float:
        """Where the lips part: between the inner upper (62) and inner lower (66) lip."""
        return float(self.landmarks[[61, 62, 63, 65, 66, 67], 1].mean())

    @property
    def mouth_centre_x(self) -> float:
        return float(self.landmarks[[48, 54], 0].mean())

    @property
    def mouth_width(self) -> float:
        return float(np.linalg.norm(self.landmarks[54] - self.landmarks[48]))

    @property
    def inner_mouth_width(self) -> float:
        return float(np.linalg.norm(self.landmarks[64] - self.landmarks[60]))

    @property
    def chin_y(self) -> float:
        return float(self.landmarks[8, 1])

    @property
    def jaw_half_width(self) -> float:
        return float(self.landmarks[16, 0] - self.landmarks[0, 0]) / 2


def load_face_photo(path: Path | None = None) -> np.ndarray:
    path = Path(path or DEFAULT_FACE)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read the face photo {path}")
    return image


def build_rig(photo: np.ndarray, size: int = 512, landmarker: DlibLandmarker | None = None) -> FaceRig:
    """Scale `photo` for a `size` x `size` output and locate its face (exactly one expected)."""
    landmarker = landmarker or DlibLandmarker()
    first = landmarker(photo)
    if first.count == 0:
        raise ValueError("no face found in the face photo")
    box = first.boxes[0]
    scale = FACE_SHARE * size / float(box[2] - box[0])
    h, w = photo.shape[:2]
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    image = cv2.resize(photo, (round(w * scale), round(h * scale)), interpolation=interp)
    found = landmarker(image)
    if found.count == 0:
        raise ValueError("the face is lost after scaling the photo")
    face_box = found.boxes[0].astype(np.float32)
    centre = (face_box[:2] + face_box[2:]) / 2
    origin = np.array([centre[0] - size / 2, centre[1] - FACE_CENTRE_Y * size], np.float32)
    return FaceRig(image, found.landmarks[0].astype(np.float32), face_box, size, origin)
