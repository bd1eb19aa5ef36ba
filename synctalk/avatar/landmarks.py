"""Face detection and 68-point landmarks, offline.

Faces are found by dlib's HOG detector; the 68 points come from dlib's shape predictor
(`shape_predictor_68_face_landmarks.dat` from the `face-recognition-models` package) or from
an ONNX landmark model given by path. No weights are downloaded.

Licence note: dlib's 68-point model was trained on the iBUG 300-W data set, whose terms
restrict commercial use; check them before shipping avatars made with it.

ONNX landmark model contract (`models.landmark_model`): one input [1,3,S,S] float32 RGB in
0..1 (S read from the model, 192 if dynamic), the square face crop `ONNX_CROP_SCALE` x the
detector box around its centre (zero padded outside the frame); one output of 136 values
(68 x/y pairs in the 0..1 crop space; values above 2 are taken as input pixels).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

NUM_POINTS = 68
# HOG runs on a copy of the frame scaled so its longer side is at most this: dlib's HOG
# finds faces of about 80 px and up, and a 1080p talking head keeps a face of 150 px or more
# at this size while detection becomes ~7x cheaper than on the full frame.
DETECT_MAX_SIDE = 640
TRACK_FACE_PX = 110
ONNX_CROP_SCALE = 1.3
ONNX_DEFAULT_SIZE = 192


@dataclass(frozen=True)
class FaceResult:
    """All faces found in one frame: boxes [F,4] (x0,y0,x1,y1) and landmarks [F,68,2], in
    full-frame pixels, the most confident face first."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    @property
    def count(self) -> int:
        return int(self.boxes.shape[0])


class Landmarker(Protocol):
    name: str

    def __call__(self, frame_bgr: np.ndarray) -> FaceResult:
        """Every face of a BGR uint8 frame with its 68 landmarks."""
        ...


def face_models_dir() -> Path:
    """The `models/` folder of the face-recognition-models package, found without importing
    it (its __init__ needs pkg_resources, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face-recognition-models package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def dlib_predictor_path() -> Path:
    path = face_models_dir() / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (reinstall face-recognition-models)")
    return path


class HogDetector:
    """dlib's frontal-face HOG detector on a downscaled grey copy.

    Once a face has been seen, the next frame is scaled so that face is about
    `TRACK_FACE_PX` wide (HOG's cost grows with the pixel count, and its window is 80 px);
    if nothing is found there, the frame is searched again at the default scale, then with
    one upsampling (small faces)."""

    def __init__(self, max_side: int = DETECT_MAX_SIDE) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.max_side = max_side
        # Width of the last face found (frame pixels): sets the next frame's scale. Saved and
        # restored by a resumed preparation, so it gives the same results as one run.
        self.face_px: float | None = None

    def _run(self, grey: np.ndarray, scale: float, upsample: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = grey.shape
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(grey, upsample, 0.0)
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                         np.float32).reshape(-1, 4) / scale
        return boxes, np.asarray(scores, np.float32).reshape(-1)

    def __call__(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [F,4] float32 in frame pixels and their scores, best first."""
        h, w = frame_bgr.shape[:2]
        grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        default = min(1.0, self.max_side / max(h, w))
        tries = [(default, 0), (default, 1)]
        if self.face_px:
            tracked = min(default, TRACK_FACE_PX / self.face_px)
            if tracked < default * 0.9:
                tries.insert(0, (tracked, 0))
        boxes, scores = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        for scale, upsample in tries:
            boxes, scores = self._run(grey, scale, upsample)
            if len(boxes):
                break
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        self.face_px = float(boxes[0, 2] - boxes[0, 0]) if len(boxes) else None
        return boxes, scores


@lru_cache(maxsize=2)
def _shape_predictor(path: str) -> Any:
    """Loaded once per process: the 68-point model is 100 MB and takes ~2 s to read."""
    import dlib

    return dlib.shape_predictor(path)


class DlibLandmarker:
    """HOG faces + dlib's 68-point shape predictor."""

    name = "dlib-68"

    def __init__(self, predictor_path: Path | None = None, max_side: int = DETECT_MAX_SIDE) -> None:
        import dlib

        self._dlib = dlib
        self.detect = HogDetector(max_side)
        self._predictor = _shape_predictor(str(predictor_path or dlib_predictor_path()))

    def __call__(self, frame_bgr: np.ndarray) -> FaceResult:
        boxes, scores = self.detect(frame_bgr)
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        points = np.zeros((len(boxes), NUM_POINTS, 2), np.float32)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            rect = self._dlib.rectangle(int(round(x0)), int(round(y0)),
                                        int(round(x1)) - 1, int(round(y1)) - 1)
            shape = self._predictor(rgb, rect)
            points[k] = [(shape.part(i).x, shape.part(i).y) for i in range(NUM_POINTS)]
        return FaceResult(boxes, points, scores)


class OnnxLandmarker:
    """HOG faces + a 68-point ONNX landmark model (see the module docstring for its contract)."""

    def __init__(self, model_path: Path, max_side: int = DETECT_MAX_SIDE) -> None:
        import onnxruntime as ort

        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"landmark model {model_path} does not exist")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        inp = self._session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ValueError(f"{model_path}: expected an input [1,3,S,S], got {shape}")
        size = shape[2] if isinstance(shape[2], int) and shape[2] > 0 else ONNX_DEFAULT_SIZE
        self.size = int(size)
        self._input = inp.name
        self.name = f"onnx:{model_path.name}"
        self.detect = HogDetector(max_side)

    def __call__(self, frame_bgr: np.ndarray) -> FaceResult:
        boxes, scores = self.detect(frame_bgr)
        points = np.zeros((len(boxes), NUM_POINTS, 2), np.float32)
        for k, box in enumerate(boxes):
            points[k] = self._points(frame_bgr, box)
        return FaceResult(boxes, points, scores)

    def _points(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (float(v) for v in box)
        side = ONNX_CROP_SCALE * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left, top = cx - side / 2, cy - side / 2
        scale = self.size / side
        affine = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]], np.float32)
        crop = cv2.warpAffine(frame_bgr, affine, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        blob = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        out = np.asarray(self._session.run(None, {self._input: blob})[0], np.float32).reshape(-1)
        if out.size != 2 * NUM_POINTS:
            raise ValueError(f"{self.name}: expected {2 * NUM_POINTS} outputs, got {out.size}")
        pts = out.reshape(NUM_POINTS, 2)
        if np.abs(pts).max() > 2.0:
            pts = pts / self.size
        return pts * side + np.array([left, top], np.float32)


def build_landmarker(model_path: str | Path | None = None) -> Landmarker:
    """dlib's 68-point predictor, or the ONNX landmark model at `model_path` when given."""
    if model_path:
        return OnnxLandmarker(Path(model_path))
    return DlibLandmarker()
