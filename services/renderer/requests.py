"""Checks on Render's messages. Each violation is an RpcError naming the field path, e.g.
`frame.features.shape: expected [32,16,16], got [16,512]` (INVALID_ARGUMENT), or
RESOURCE_EXHAUSTED for a stream past `renderer.max_frames`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synctalk.models.unet import AUDIO_SHAPES
from synctalk.render.encode import Encoding
from synctalk.rpc.errors import exhausted, invalid, quote
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2

_DTYPES = {
    common_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
}
_ENCODINGS = {
    common_pb2.IMAGE_ENCODING_UNSPECIFIED: Encoding.JPEG,
    common_pb2.IMAGE_ENCODING_JPEG: Encoding.JPEG,
    common_pb2.IMAGE_ENCODING_RAW_RGB: Encoding.RAW_RGB,
}
WIRE_ENCODING = {
    Encoding.JPEG: common_pb2.IMAGE_ENCODING_JPEG,
    Encoding.RAW_RGB: common_pb2.IMAGE_ENCODING_RAW_RGB,
}


def _shape(dims: object) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"  # type: ignore[attr-defined]


def _dtype_name(value: int) -> str:
    try:
        return common_pb2.DType.Name(value)
    except ValueError:
        return str(value)


@dataclass(frozen=True)
class RenderOptions:
    avatar: str
    encoding: Encoding
    jpeg_quality: int
    crop_only: bool
    start_frame: int


def parse_config(request: renderer_pb2.RenderRequest | None, default_quality: int) -> RenderOptions:
    """The first message: it must be a RenderConfig with sane options."""
    if request is None:
        raise invalid("config", "the stream ended before its first message (a RenderConfig)")
    if request.WhichOneof("payload") != "config":
        got = request.WhichOneof("payload") or "an empty message"
        raise invalid("config", f"the first message must be a RenderConfig, got {got}")
    cfg = request.config
    if cfg.encoding not in _ENCODINGS:
        raise invalid("config.encoding", f"unknown image encoding {cfg.encoding}")
    if not 0 <= cfg.jpeg_quality <= 100:
        raise invalid("config.jpeg_quality", f"expected 1..100 (0 = default), got {cfg.jpeg_quality}")
    if cfg.start_frame < 0:
        raise invalid("config.start_frame", f"must be >= 0, got {cfg.start_frame}")
    return RenderOptions(
        avatar=cfg.avatar,
        encoding=_ENCODINGS[cfg.encoding],
        jpeg_quality=cfg.jpeg_quality or default_quality,
        crop_only=cfg.crop_only,
        start_frame=int(cfg.start_frame),
    )


def parse_idle_request(request: renderer_pb2.IdleLoopRequest, default_quality: int,
                       default_mode: str) -> tuple[RenderOptions, str]:
    """An IdleLoop request's options (full frames from the walk's start) and feature mode."""
    if request.encoding not in _ENCODINGS:
        raise invalid("encoding", f"unknown image encoding {request.encoding}")
    if not 0 <= request.jpeg_quality <= 100:
        raise invalid("jpeg_quality", f"expected 1..100 (0 = default), got {request.jpeg_quality}")
    mode = request.feature_mode or default_mode
    if mode not in AUDIO_SHAPES:
        raise invalid("feature_mode", f"unknown feature mode {quote(mode)} "
                                      f"(known: {', '.join(AUDIO_SHAPES)})")
    options = RenderOptions(avatar=request.avatar, encoding=_ENCODINGS[request.encoding],
                            jpeg_quality=request.jpeg_quality or default_quality,
                            crop_only=False, start_frame=0)
    return options, mode


@dataclass(frozen=True)
class ParsedFrame:
    index: int
    mode: str
    features: np.ndarray  # float32 [*AUDIO_SHAPES[mode]]
    voiced: bool
    rms: float


class FrameChecker:
    """Validates FeatureFrames in arrival order: contiguous indices from 0, one feature mode
    per stream, a float tensor of the mode's shape, at most `max_frames` frames."""

    def __init__(self, max_frames: int, default_mode: str) -> None:
        self.max_frames = max_frames
        self.default_mode = default_mode
        self.expected = 0
        self.mode: str | None = None

    def check(self, request: renderer_pb2.RenderRequest) -> ParsedFrame:
        kind = request.WhichOneof("payload")
        if kind != "frame":
            raise invalid("frame", f"expected a FeatureFrame, got {kind or 'an empty message'}"
                                   + (" (only the first message may be a config)"
                                      if kind == "config" else ""))
        frame = request.frame
        if frame.index != self.expected:
            raise invalid("frame.index", f"expected {self.expected} (frames in order from 0), "
                                         f"got {frame.index}")
        if frame.index >= self.max_frames:
            raise exhausted(f"stream longer than renderer.max_frames={self.max_frames}")
        mode = frame.mode or self.mode or self.default_mode
        if mode not in AUDIO_SHAPES:
            raise invalid("frame.mode", f"unknown feature mode {mode!r} "
                                        f"(known: {', '.join(AUDIO_SHAPES)})")
        if self.mode is not None and mode != self.mode:
            raise invalid("frame.mode", f"changed from {self.mode!r} to {mode!r} mid-stream")
        features = parse_tensor(frame.features, AUDIO_SHAPES[mode], "frame.features")
        if not np.isfinite(frame.rms) or frame.rms < 0:
            raise invalid("frame.rms", f"must be a finite level >= 0, got {frame.rms}")
        self.mode = mode
        self.expected += 1
        return ParsedFrame(int(frame.index), mode, features, bool(frame.voiced), float(frame.rms))


def parse_tensor(tensor: common_pb2.Tensor, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A float32 array of exactly `shape` from a Tensor message (float16 is widened)."""
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise invalid(f"{where}.dtype", "expected DTYPE_FLOAT32 or DTYPE_FLOAT16, got "
                                        f"{_dtype_name(tensor.dtype)}")
    if tuple(tensor.shape) != tuple(shape):
        raise invalid(f"{where}.shape", f"expected {_shape(shape)}, got {_shape(tensor.shape)}")
    want = int(np.prod(shape)) * dtype.itemsize
    if len(tensor.data) != want:
        raise invalid(f"{where}.data", f"expected {want} bytes for {_shape(shape)} "
                                       f"{dtype.name}, got {len(tensor.data)}")
    array = np.frombuffer(tensor.data, dtype).reshape(shape).astype(np.float32)
    if not np.isfinite(array).all():
        raise invalid(f"{where}.data", "holds NaN or infinite values")
    return array
