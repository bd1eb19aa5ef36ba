"""CUDA twins of the crop/mask and paste-back kernels, launched through CuPy.

Same interface as `kernels.cpu`, on GPU arrays: frames stay on the device (CuPy arrays, or
torch CUDA tensors shared zero-copy through `__cuda_array_interface__` / DLPack), one launch
per batch, and only the per-frame table (pointer, size, pitch, box: 64 bytes a frame) crosses
from the host. Kernels run on CuPy's current stream; when torch produced the inputs, wrap the
calls in `cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)`.

The module is compiled lazily on first use from kernels/paste_blend.cu, which includes
crop_mask.cu, so one RawModule holds all four entry points.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from kernels.compile import KERNEL_DIR, expand_source
from kernels.reference import DEFAULT_FEATHER, WINDOW, check_inputs, check_pred, visible

NAME = "cuda"
BLOCK = (32, 8, 1)
META_FIELDS = 8
_lock = threading.Lock()
_module: Any = None


def module() -> Any:
    """The compiled RawModule (compiled once per process, cached on disk by CuPy)."""
    global _module
    with _lock:
        if _module is None:
            import cupy

            mod = cupy.RawModule(code=expand_source(KERNEL_DIR / "paste_blend.cu"))
            for name in ("crop_mask_f32", "crop_mask_f16", "paste_blend_f32", "paste_blend_f16"):
                mod.get_function(name)
            _module = mod
        return _module


def as_cupy(x: Any, what: str) -> Any:
    """A CuPy view of a GPU array without copying."""
    import cupy

    if isinstance(x, cupy.ndarray):
        return x
    if isinstance(x, np.ndarray) or getattr(x, "is_cuda", True) is False:
        raise TypeError(f"{what}: expected a GPU array, got a host array (use kernels.cpu)")
    if hasattr(x, "__cuda_array_interface__"):
        return cupy.asarray(x)
    if hasattr(x, "__dlpack__"):
        return cupy.from_dlpack(x)
    raise TypeError(f"{what}: expected a GPU array (CuPy or a CUDA tensor), got {type(x).__name__}")


def host_boxes(boxes: Any) -> np.ndarray:
    """Boxes as a host array, wherever they live (they are a few bytes)."""
    if hasattr(boxes, "get") and not isinstance(boxes, np.ndarray):
        return boxes.get()
    if hasattr(boxes, "detach"):
        return boxes.detach().cpu().numpy()
    return np.asarray(boxes)


def frame_table(frames: Sequence[Any], boxes: Any) -> tuple[list[Any], np.ndarray, Any]:
    """Validated CuPy frames, host boxes [B,4] and the device table int64 [B,8]."""
    import cupy

    views = [as_cupy(f, f"frames[{i}]") for i, f in enumerate(frames)]
    b = check_inputs(views, host_boxes(boxes))
    meta = np.empty((len(views), META_FIELDS), dtype=np.int64)
    for i, f in enumerate(views):
        if f.strides[2] != 1 or f.strides[1] != 3 or f.strides[0] < 3 * f.shape[1]:
            raise ValueError(f"frames[{i}]: pixels must be packed BGR (strides {f.strides})")
        meta[i, :4] = (f.data.ptr, f.shape[1], f.shape[0], f.strides[0])
        meta[i, 4:] = b[i]
    return views, b, cupy.asarray(meta)


def crop_mask(
    frames: Sequence[Any],
    boxes: Any,
    out: Any | None = None,
    dtype: type = np.float32,
) -> Any:
    """U-Net input [B,6,320,320] in 0-1 BGR on the GPU (float32 or float16)."""
    import cupy

    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"dtype: expected float32 or float16, got {dt}")
    views, _, meta = frame_table(frames, boxes)
    shape = (len(views), 6, WINDOW, WINDOW)
    result = cupy.empty(shape, dtype=dt) if out is None else out
    dst = as_cupy(result, "out")
    if tuple(dst.shape) != shape or dst.dtype != dt or not dst.flags.c_contiguous:
        raise ValueError(
            f"out: expected C-contiguous {list(shape)} {dt}, got {list(dst.shape)} {dst.dtype}"
        )
    if views:
        name = "crop_mask_f32" if dt == np.float32 else "crop_mask_f16"
        grid = (WINDOW // BLOCK[0], WINDOW // BLOCK[1], len(views))
        module().get_function(name)(grid, BLOCK, (meta, dst, np.int32(len(views))))
    return result


def paste_back(
    frames: Sequence[Any],
    boxes: Any,
    pred: Any,
    feather: float = DEFAULT_FEATHER,
) -> None:
    """Blend the predicted faces [B,3,320,320] (0-1 BGR, float32 or float16) into the GPU
    frames, in place. Frames of one batch must not overlap in memory."""
    import cupy

    if feather < 0:
        raise ValueError(f"feather: must be >= 0, got {feather}")
    views, b, meta = frame_table(frames, boxes)
    p = cupy.ascontiguousarray(as_cupy(pred, "pred"))
    check_pred(p, len(views))
    if p.dtype not in (cupy.float32, cupy.float16):
        raise ValueError(f"pred: expected float32 or float16, got {p.dtype}")
    spans = [visible(box, f.shape) for box, f in zip(b, views, strict=True)]
    width = max((max(x1 - x0, 0) for x0, _, x1, _ in spans), default=0)
    height = max((max(y1 - y0, 0) for _, y0, _, y1 in spans), default=0)
    if width == 0 or height == 0:
        return
    name = "paste_blend_f32" if p.dtype == cupy.float32 else "paste_blend_f16"
    grid = (-(-width // BLOCK[0]), -(-height // BLOCK[1]), len(views))
    module().get_function(name)(grid, BLOCK, (meta, p, np.float32(feather), np.int32(len(views))))
