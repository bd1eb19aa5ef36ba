"""Exported U-Net graphs cached beside the checkpoint (`<checkpoint>.fp32.onnx`,
`<checkpoint>.int8.onnx`, the int8 verdict in its metadata), keyed by the checkpoint's size
and mtime, so a renderer exports and quantises a checkpoint once, not on every load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from synctalk.log import get_logger
from synctalk.models.int8 import (
    INT8_MAX_MEAN_ABS_DIFF,
    INT8_RECIPES,
    Calibration,
    int8_quality,
    quantize_int8,
)
from synctalk.models.runners import OrtUNetRunner
from synctalk.models.unet import UNet328, load_unet

log = get_logger("synctalk.models.onnx_cache")

CACHE_VERSION = "2"  # bump when the export or quantisation recipe changes


def source_key(checkpoint: Path) -> str:
    stat = checkpoint.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{CACHE_VERSION}"


def cache_path(checkpoint: Path, precision: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.{precision}.onnx")


def _read_cached(path: Path, key: str) -> tuple[bytes, dict[str, str]] | None:
    """The cached graph and its metadata when it was made from this very checkpoint."""
    from synctalk.models.onnx_export import read_metadata

    try:
        data = path.read_bytes()
        meta = read_metadata(data)
    except Exception:  # a missing, torn or foreign file is a cache miss, whatever the parser says
        return None
    return (data, meta) if meta.get("synctalk.source") == key else None


def _store(path: Path, data: bytes) -> None:
    from synctalk.models.onnx_export import atomic_write

    try:
        atomic_write(data, path)
    except OSError as exc:  # a read-only avatar store still serves, from memory
        log.warning("unet.onnx_cache_unwritable", path=str(path), error=str(exc))


def fp32_onnx(checkpoint: Path, model: UNet328 | None = None, cache: bool = True) -> bytes:
    """The checkpoint's fp32 ONNX graph, from the cache when it matches the checkpoint."""
    from synctalk.models.onnx_export import unet_onnx_bytes

    key = source_key(checkpoint)
    path = cache_path(checkpoint, "fp32")
    if cache and (hit := _read_cached(path, key)):
        return hit[0]
    started = time.perf_counter()
    data = unet_onnx_bytes(model or load_unet(checkpoint), {"synctalk.source": key})
    log.info("unet.onnx_exported", checkpoint=str(checkpoint),
             seconds=round(time.perf_counter() - started, 2))
    if cache:
        _store(path, data)
    return data


def int8_onnx(checkpoint: Path, fp32: bytes, audio_shape: tuple[int, ...], threads: int,
              calibrate: Callable[[], Calibration | None],
              cache: bool = True) -> tuple[bytes | None, dict[str, str]]:
    """(int8 graph or None, its quality record). None when no calibration data exists or
    the int8 graph failed the quality check; the verdict is cached with the graph, so
    `calibrate` is called only when the cache misses."""
    from synctalk.models.onnx_export import with_metadata

    key = source_key(checkpoint)
    path = cache_path(checkpoint, "int8")
    if cache and (hit := _read_cached(path, key)):
        data, meta = hit
        record = {k.removeprefix("synctalk.int8_"): v for k, v in meta.items()
                  if k.startswith("synctalk.int8_")}
        return (data if meta.get("synctalk.int8_accepted") == "1" else None), record
    calibration = calibrate()
    if calibration is None:
        return None, {"accepted": "0", "reason": "no calibration data (avatar frames, boxes "
                                                 "and features not found)"}
    reference = OrtUNetRunner(fp32, audio_shape, "fp32", threads)
    record: dict[str, str] = {}
    for recipe, scopes in INT8_RECIPES.items():
        started = time.perf_counter()
        data = quantize_int8(fp32, calibration.fit_image, calibration.fit_audio, scopes)
        quality = int8_quality(reference, OrtUNetRunner(data, audio_shape, "int8", threads),
                               calibration.check_image, calibration.check_audio)
        accepted = quality["mean_abs_diff"] <= INT8_MAX_MEAN_ABS_DIFF
        record = {"accepted": "1" if accepted else "0", "recipe": recipe,
                  **{k: f"{v:.4f}" for k, v in quality.items()},
                  "fit_frames": str(len(calibration.fit_image)),
                  "check_frames": str(len(calibration.check_image))}
        log.info("unet.int8_built", checkpoint=str(checkpoint), recipe=recipe,
                 accepted=accepted, seconds=round(time.perf_counter() - started, 1), **quality)
        if accepted:
            break
    data = with_metadata(data, {"synctalk.source": key,
                                **{f"synctalk.int8_{k}": v for k, v in record.items()}})
    if cache:
        _store(path, data)
    return (data if record["accepted"] == "1" else None), record
