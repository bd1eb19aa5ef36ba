"""Where the U-Net runs: eager torch (CUDA, fp16) or ONNX Runtime (the CPU default).

Every runner takes and returns NumPy float32: image [B,6,320,320] and audio [B,*audio_shape]
in, [B,3,320,320] in (0, 1) out, B dynamic. The model is loaded once per runner.

On the CPU, ONNX Runtime runs the U-Net several times faster than eager torch. Its int8
graphs (static QOperator quantisation, calibrated on the avatar's own crops and features)
are faster again, and one is used only where it stays within `INT8_MAX_MEAN_ABS_DIFF` grey
levels (mean absolute difference on the 0..255 scale) of fp32 on held-out frames of that
avatar: the recipes in `INT8_RECIPES` are tried fastest first when the int8 file is built,
and the checkpoint stays fp32 when none passes. Exported graphs and that verdict are cached
beside the checkpoint (`<checkpoint>.fp32.onnx`, `<checkpoint>.int8.onnx`), keyed by the
checkpoint's size and mtime.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from synctalk.config import ModelsConfig
from synctalk.features.device import resolve_device, use_fp16
from synctalk.log import get_logger
from synctalk.models.onnx_export import (
    UNET_INPUTS,
    UNET_OUTPUT,
    atomic_write,
    read_metadata,
    unet_onnx_bytes,
    with_metadata,
)
from synctalk.models.unet import IMAGE_SHAPE, UNet328, load_unet

log = get_logger("synctalk.models.runtime")

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
# The default of `models.unet_precision`. fp32: int8 gains 1.2-1.5x on a 2-core AVX2 CPU and
# its first build per checkpoint (two quantisations and checks) takes about a minute;
# `synctalk export --int8` builds it ahead of time.
DEFAULT_PRECISION: Precision = "fp32"
INT8_MAX_MEAN_ABS_DIFF = 1.0  # grey levels (0..255) against fp32, on held-out avatar frames
CALIBRATION_FRAMES = 16
CHECK_FRAMES = 8
# int8 recipes, fastest first: name -> scopes (torch module paths, as the exported node
# names start) kept in fp32. The first one within the bound on the avatar is used.
INT8_RECIPES: dict[str, tuple[str, ...]] = {
    "full": (),
    "fp32-edges": ("/inc/", "/up5/"),  # the 320x320 layers, where 8-bit activations blur most
}
CACHE_VERSION = "2"  # bump when the export or quantisation recipe changes


@runtime_checkable
class UNetRunner(Protocol):
    """A loaded U-Net: image [B,6,320,320] + audio [B,*audio_shape] -> [B,3,320,320]."""

    audio_shape: tuple[int, ...]
    backend: str  # "torch" or "onnxruntime"
    precision: str  # "fp32", "fp16" or "int8"

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray: ...


def check_inputs(image: np.ndarray, audio: np.ndarray,
                 audio_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float32 views of the inputs; ValueError naming the bad shape."""
    if image.ndim != 4 or tuple(image.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"image: expected [B,{','.join(map(str, IMAGE_SHAPE))}], "
                         f"got {list(image.shape)}")
    if audio.ndim != 1 + len(audio_shape) or tuple(audio.shape[1:]) != audio_shape:
        raise ValueError(f"audio: expected [B,{','.join(map(str, audio_shape))}], "
                         f"got {list(audio.shape)}")
    if image.shape[0] != audio.shape[0]:
        raise ValueError(f"batch mismatch: image {image.shape[0]}, audio {audio.shape[0]}")
    return (np.ascontiguousarray(image, np.float32), np.ascontiguousarray(audio, np.float32))


class TorchUNetRunner:
    """The module on its device under inference_mode; fp16 and channels-last on CUDA."""

    backend = "torch"

    def __init__(self, model: UNet328, device: str = "cpu", fp16: bool = False) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.precision = "fp16" if fp16 else "fp32"
        self.memory_format = (torch.channels_last if self.device.type == "cuda"
                              else torch.contiguous_format)
        self.model = model.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        self.audio_shape = tuple(model.audio_shape)

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        image, audio = check_inputs(image, audio, self.audio_shape)
        with torch.inference_mode():
            x = torch.from_numpy(image).to(self.device, self.dtype, non_blocking=True)
            a = torch.from_numpy(audio).to(self.device, self.dtype, non_blocking=True)
            y = self.model(x.contiguous(memory_format=self.memory_format), a)
            return y.float().cpu().numpy()


def ort_session(model: bytes, threads: int = 0, providers: Sequence[str] | None = None,
                spin: bool = False) -> Any:
    """An ONNX Runtime session with every graph optimisation (BN folding, conv+activation
    fusion, the NCHWc layout for fp32 and NHWC for int8 convs) and denormals flushed.

    Worker threads sleep between operators instead of spinning: on a CPU shared with
    feature extraction, JPEG encoding and other streams, spinning threads took the cores
    from the rest (2 threads ran at 2.9 frames/s spinning, 3.8 sleeping, under load 6)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(model, options,
                                providers=list(providers or ["CPUExecutionProvider"]))


class OrtUNetRunner:
    """An exported U-Net (fp32 or int8 ONNX) in ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(self, model: bytes, audio_shape: tuple[int, ...], precision: str = "fp32",
                 threads: int = 0, providers: Sequence[str] | None = None) -> None:
        self.session = ort_session(model, threads, providers)
        self.audio_shape = tuple(audio_shape)
        self.precision = precision

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        image, audio = check_inputs(image, audio, self.audio_shape)
        return self.session.run([UNET_OUTPUT], {UNET_INPUTS[0]: image,
                                                UNET_INPUTS[1]: audio})[0]


def warmup(runner: UNetRunner, batch: int = 1) -> None:
    """One call, so the first real frame does not pay for lazy allocation and kernel choice."""
    runner(np.zeros((batch, *IMAGE_SHAPE), np.float32),
           np.zeros((batch, *runner.audio_shape), np.float32))


# ---------------------------------------------------------------- int8 quantisation


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
    avatar = checkpoint.resolve().parent.parent
    boxes_path, features_path = avatar / "boxes.npy", avatar / f"features_{audio_mode}.npy"
    if not (boxes_path.is_file() and features_path.is_file()):
        return None
    try:
        from kernels import crop_mask

        if (avatar / "frames.npy").is_file():
            source = np.load(avatar / "frames.npy", mmap_mode="r")
        else:
            from synctalk.avatar import open_frames

            source = open_frames(avatar)
        boxes = np.load(boxes_path)
        features = np.load(features_path, mmap_mode="r")
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


# ---------------------------------------------------------------- cached exports


def source_key(checkpoint: Path) -> str:
    stat = checkpoint.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{CACHE_VERSION}"


def cache_path(checkpoint: Path, precision: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.{precision}.onnx")


def _read_cached(path: Path, key: str) -> tuple[bytes, dict[str, str]] | None:
    """The cached graph and its metadata when it was made from this very checkpoint."""
    try:
        data = path.read_bytes()
        meta = read_metadata(data)
    except Exception:  # a missing, torn or foreign file is a cache miss, whatever the parser says
        return None
    return (data, meta) if meta.get("synctalk.source") == key else None


def _store(path: Path, data: bytes) -> None:
    try:
        atomic_write(data, path)
    except OSError as exc:  # a read-only avatar store still serves, from memory
        log.warning("unet.onnx_cache_unwritable", path=str(path), error=str(exc))


def fp32_onnx(checkpoint: Path, model: UNet328 | None = None, cache: bool = True) -> bytes:
    """The checkpoint's fp32 ONNX graph, from the cache when it matches the checkpoint."""
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


# ---------------------------------------------------------------- the factory


def resolve_backend(models: ModelsConfig, device: str) -> str:
    """`auto`: torch on CUDA, ONNX Runtime on the CPU."""
    if models.backend != "auto":
        return models.backend
    return "torch" if device == "cuda" else "onnxruntime"


def build_unet_runner(checkpoint: Path, models: ModelsConfig, *,
                      precision: Precision | None = None,
                      calibration: Calibration | None = None,
                      cache: bool = True) -> UNetRunner:
    """Load `checkpoint` once into the runner `models` asks for.

    `precision` (default `models.unet_precision` when the config has it, else
    DEFAULT_PRECISION) applies to ONNX Runtime on the CPU: "int8" uses the int8 graph when
    one passed its quality check on the avatar, else fp32. `calibration` overrides the
    inputs taken from the checkpoint's avatar folder.
    """
    checkpoint = Path(checkpoint)
    precision = precision or getattr(models, "unet_precision", DEFAULT_PRECISION)
    if precision not in PRECISIONS:
        raise ValueError(f"unet precision must be one of {PRECISIONS}, got {precision!r}")
    device = resolve_device(models)
    backend = resolve_backend(models, device)
    model = load_unet(checkpoint)
    runner: UNetRunner
    if backend == "torch":
        if device == "cpu" and models.threads > 0:
            torch.set_num_threads(models.threads)
        runner = TorchUNetRunner(model, device, use_fp16(models, device))
    else:
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                     else ["CPUExecutionProvider"])
        fp32 = fp32_onnx(checkpoint, model, cache)
        int8: bytes | None = None
        if device == "cpu" and precision == "int8":
            int8, record = int8_onnx(
                checkpoint, fp32, model.audio_shape, models.threads,
                lambda: calibration or avatar_calibration(checkpoint, model.audio_mode), cache)
            if int8 is None:
                log.info("unet.int8_not_used", checkpoint=str(checkpoint), **record)
        runner = (OrtUNetRunner(int8, model.audio_shape, "int8", models.threads)
                  if int8 is not None else
                  OrtUNetRunner(fp32, model.audio_shape, "fp32", models.threads, providers))
    log.info("unet.runner", checkpoint=str(checkpoint), backend=runner.backend, device=device,
             precision=runner.precision, audio_mode=model.audio_mode, width=model.width)
    if models.warmup:
        warmup(runner)
    return runner
