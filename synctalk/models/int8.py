"""int8 quantisation of the exported U-Net for ONNX Runtime on the CPU.

Static QOperator quantisation, calibrated on the avatar's own crops and features, is faster
than fp32 and is used only where it stays within `INT8_MAX_MEAN_ABS_DIFF` grey levels (mean
absolute difference on the 0..255 scale) of fp32 on held-out frames of that avatar: the
recipes in `INT8_RECIPES` are tried fastest first when the int8 file is built
(`synctalk.models.onnx_cache.int8_onnx`), and the checkpoint stays fp32 when none passes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synctalk.avatar.layout import BOXES_FILE, avatar_of_checkpoint, features_path
from synctalk.log import get_logger
from synctalk.models.runners import UNetRunner

log = get_logger("synctalk.models.int8")

INT8_MAX_MEAN_ABS_DIFF = 1.0  # grey levels (0..255) against fp32, on held-out avatar frames
CALIBRATION_FRAMES = 16
CHECK_FRAMES = 8
# int8 recipes, fastest first: name -> scopes (torch module paths, as the exported node
# names start) kept in fp32. The first one within the bound on the avatar is used.
INT8_RECIPES: dict[str, tuple[str, ...]] = {
    "full": (),
    "fp32-edges": ("/inc/", "/up5/"),  # the 320x320 layers, where 8-bit activations blur most
}


@dataclass
class Calibration:
    """Realistic U-Net inputs: `fit` frames set the int8 ranges, `check` frames (others) test
    the result against fp32."""

    fit_image: np.ndarray
    fit_audio: np.ndarray
    check_image: np.ndarray
    check_audio: np.ndarray

    @classmethod
    def split(cls, image: np.ndarray, audio: np.ndarray, check: int = CHECK_FRAMES
              ) -> Calibration:
        """Every k-th sample goes to the check set, the rest fit."""
        n = len(image)
        if n < 2:
            raise ValueError("calibration needs at least 2 samples")
        check = min(check, n // 2)
        idx = np.linspace(0, n - 1, check).round().astype(int)
        held = np.zeros(n, bool)
        held[idx] = True
        return cls(image[~held], audio[~held], image[held], audio[held])


def avatar_calibration(checkpoint: Path, audio_mode: str,
                       frames: int = CALIBRATION_FRAMES + CHECK_FRAMES) -> Calibration | None:
    """Crops and features of the avatar a checkpoint belongs to (`<avatar>/checkpoints/
    unet_<mode>.pt`), evenly spread over its video; None when that folder has none."""
    avatar = avatar_of_checkpoint(checkpoint)
    boxes_file, features_file = avatar / BOXES_FILE, features_path(avatar, audio_mode)
    if not (boxes_file.is_file() and features_file.is_file()):
        return None
    try:
        from kernels import crop_mask
        from synctalk.avatar.frames import open_frames

        source = open_frames(avatar)
        boxes = np.load(boxes_file)
        features = np.load(features_file, mmap_mode="r")
        n = min(len(source), len(boxes), len(features))
        if n < 2:
            return None
        idx = np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int))
        image = crop_mask([np.asarray(source[i]) for i in idx], boxes[idx])
        audio = np.ascontiguousarray(features[idx], np.float32)
    except (ImportError, OSError, ValueError) as exc:
        log.warning("unet.calibration_unavailable", avatar=str(avatar), error=str(exc))
        return None
    return Calibration.split(image, audio)


def fp32_nodes(model_path: Path, scopes: tuple[str, ...] = ()) -> list[str]:
    """Nodes to leave in fp32: those under `scopes`, and always the output conv and sigmoid
    (the output must not be rounded to the 8-bit grid)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    sigmoid = [n for n in graph.node if n.op_type == "Sigmoid"]
    feeding = {i for n in sigmoid for i in n.input}
    head = [n.name for n in sigmoid] + [n.name for n in graph.node if feeding & set(n.output)]
    kept = [n.name for n in graph.node if scopes and n.name.startswith(scopes)]
    return sorted(set(head + kept))


def quantize_int8(fp32: bytes, image: np.ndarray, audio: np.ndarray,
                  keep_fp32: tuple[str, ...] = ()) -> bytes:
    """Static int8 QOperator quantisation (QLinearConv): uint8 activations, int8 per-channel
    weights on 7 bits (`reduce_range`, which keeps AVX2's u8 x s8 multiply-adds from
    saturating on CPUs without VNNI: without it the error grows sixfold), MinMax ranges from
    the given inputs; nodes under the `keep_fp32` scopes stay fp32."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from synctalk.models.onnx_export import UNET_INPUTS

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(image):
                return None
            self.i += 1
            return {UNET_INPUTS[0]: image[self.i - 1: self.i],
                    UNET_INPUTS[1]: audio[self.i - 1: self.i]}

    with tempfile.TemporaryDirectory(prefix="synctalk-quant-") as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=fp32_nodes(pre, keep_fp32))
        return out.read_bytes()


def mean_abs_diff_grey(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| on the 0..255 scale (outputs are 0..1)."""
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))) * 255.0)


def int8_quality(fp32: UNetRunner, int8: UNetRunner, image: np.ndarray,
                 audio: np.ndarray) -> dict[str, float]:
    """How far int8 lands from fp32 on these inputs, in grey levels."""
    diffs = []
    for i in range(len(image)):
        a = fp32(image[i: i + 1], audio[i: i + 1])
        b = int8(image[i: i + 1], audio[i: i + 1])
        diffs.append(np.abs(a.astype(np.float64) - b.astype(np.float64)) * 255.0)
    d = np.concatenate(diffs)
    return {"mean_abs_diff": float(d.mean()), "p99_abs_diff": float(np.percentile(d, 99)),
            "max_abs_diff": float(d.max())}
