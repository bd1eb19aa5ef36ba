"""Where feature models run: `auto` picks CUDA when torch sees a GPU, fp16 only there."""

from __future__ import annotations

import torch

from synctalk.config import ModelsConfig


def resolve_device(models: ModelsConfig) -> str:
    if models.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if models.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("models.device is 'cuda' but no CUDA device is available")
    return models.device


def use_fp16(models: ModelsConfig, device: str) -> bool:
    return device == "cuda" and models.fp16
