"""The U-Net runner a config asks for: torch on CUDA, ONNX Runtime (fp32, or int8 where it
passed its quality check on the avatar) on the CPU, each loaded once from its checkpoint.

`models.unet_precision` defaults to fp32: int8 gains 1.2-1.5x on a 2-core AVX2 CPU and its
first build per checkpoint (two quantisations and checks) takes about a minute;
`synctalk export --int8` builds it ahead of time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from synctalk.config import ModelsConfig
from synctalk.features.device import resolve_device, use_fp16
from synctalk.log import get_logger
from synctalk.models.int8 import Calibration, avatar_calibration
from synctalk.models.onnx_cache import fp32_onnx, int8_onnx
from synctalk.models.runners import OrtUNetRunner, TorchUNetRunner, UNetRunner, warmup
from synctalk.models.unet import load_unet

log = get_logger("synctalk.models.runner_factory")

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


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

    `precision` (default `models.unet_precision`) applies to ONNX Runtime on the CPU: "int8" uses the int8 graph when
    one passed its quality check on the avatar, else fp32. `calibration` overrides the
    inputs taken from the checkpoint's avatar folder.
    """
    checkpoint = Path(checkpoint)
    precision = precision or models.unet_precision
    if precision not in PRECISIONS:
        raise ValueError(f"unet precision must be one of {PRECISIONS}, got {precision!r}")
    device = resolve_device(models)
    backend = resolve_backend(models, device)
    model = load_unet(checkpoint)
    runner: UNetRunner
    if backend == "torch":
        if device == "cpu" and models.threads > 0:
            torch.set_num_threads(models.threads)
        runner = TorchUNetRunner(model, device, use_fp16(models, device),
                                 bf16=device == "cuda" and models.bf16)
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
