"""Rendered BGR frames to the bytes a VideoFrame carries: baseline JPEG or packed RGB."""

from __future__ import annotations

from enum import StrEnum

import cv2
import numpy as np

from synctalk.config import RendererConfig

# The renderer's default, stated once in its config section.
DEFAULT_JPEG_QUALITY: int = RendererConfig.model_fields["jpeg_quality"].default


class Encoding(StrEnum):
    JPEG = "jpeg"
    RAW_RGB = "raw_rgb"


def encode_jpeg(bgr: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Baseline (non-progressive) JPEG, 4:2:0, libjpeg-turbo through OpenCV."""
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg_quality: expected 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_raw_rgb(bgr: np.ndarray) -> bytes:
    """height * width * 3 bytes, RGB, row-major."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).tobytes()


def encode(bgr: np.ndarray, encoding: Encoding, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    if encoding is Encoding.JPEG:
        return encode_jpeg(bgr, quality)
    return encode_raw_rgb(bgr)


def decode_raw_rgb(data: bytes, width: int, height: int) -> np.ndarray:
    """The inverse of `encode_raw_rgb`, as BGR (tests and clients)."""
    rgb = np.frombuffer(data, np.uint8).reshape(height, width, 3)
    return np.ascontiguousarray(rgb[..., ::-1])
