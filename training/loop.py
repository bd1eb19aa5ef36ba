"""The epoch loop SyncNet and U-Net training share: Adam, AMP on CUDA, DDP, resume, progress.

On CUDA the step runs under bf16 autocast (fp16 with a gradient scaler where bf16 is not
supported, or when the profile asks), with the fused Adam kernel and, when the profile asks,
a `torch.compile`d network; on the CPU it is the plain fp32 step. Batches come from the
training cache (`training.cached_batches`) or, without one, from a DataLoader.

Every step zeroes the gradients before its backward pass (SyncTalk_2D's SyncNet loop never
did, so its gradients piled up over the whole run). Data order comes from a
DistributedSampler seeded by (seed, epoch) (one replica in a single process), and the
datasets' own draws from (seed, epoch, index), so a resumed run sees the same batches the
uninterrupted one would have.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from synctalk.log import get_logger
from training.cache import TrainingCache
from training.cached_batches import DeviceCache, cached_loader
from training.checkpoints import training_state
from training.distributed import DistContext, barrier, mean_across, wrap_model
from training.metrics import ScalarLog

log = get_logger("training")


def make_loader(dataset: Dataset, batch_size: int, ctx: DistContext, *, seed: int,
                workers: int, shuffle: bool) -> tuple[DataLoader, DistributedSampler]:
    """This rank's shard of `dataset`, reshuffled per epoch through `sampler.set_epoch`."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=shuffle, seed=seed)
    workers = min(workers, os.cpu_count() or 1)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=False)
    return loader, sampler


def autocast_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 (no gradient scaler needed) where the GPU supports it, else fp16."""
    if name not in ("bf16", "fp16"):
        raise ValueError(f"amp_dtype must be bf16 or fp16, got {name!r}")
    if name == "bf16" and (device.type != "cuda" or torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


class EpochTrainer(ABC):
    """Owns the model, optimiser, scaler and loop; subclasses define one step and the saving.

    Weights and image batches are channels-last (NHWC): a U-Net training step on this
    project's 2-core CPU took 2.6 s instead of 5.0 s at batch 8 (bench/RESULTS.md), and
    cuDNN's fp16 convolutions want the same layout.
    """

    kind = "model"

    def __init__(self, *, model: nn.Module, dataset: Any, batch_size: int, lr: float,
                 epochs: int, ctx: DistContext, seed: int, workers: int, amp: bool,
                 scalars: ScalarLog, cache: TrainingCache | None = None,
                 amp_dtype: str = "bf16", compile: bool = False) -> None:
        self.ctx = ctx
        cuda = ctx.device.type == "cuda"
        self.raw_model = model.to(ctx.device, memory_format=torch.channels_last)
        self.model = wrap_model(self.raw_model, ctx)
        if compile and cuda:
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        self.compiled = compile and cuda
        self.optimizer = torch.optim.Adam(self.raw_model.parameters(), lr=lr, fused=cuda or None)
        self.use_amp = amp and cuda
        self.amp_dtype = autocast_dtype(amp_dtype, ctx.device)
        self.scaler = torch.amp.GradScaler(
            ctx.device.type, enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.dataset = dataset
        self.source = DeviceCache(cache, ctx.device) if cache is not None else None
        if self.source is not None:
            self.loader, self.sampler = cached_loader(dataset, self.source, batch_size, ctx,
                                                      seed=seed, shuffle=True)
        else:
            self.loader, self.sampler = make_loader(dataset, batch_size, ctx, seed=seed,
                                                    workers=workers, shuffle=True)
        self.epochs = epochs
        self.start_epoch = 0
        self.step = 0
        self.scalars = scalars
        self.history: list[dict[str, float]] = []  # this rank's per-step losses, for tests

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def fixed_loader(self, dataset: Any, batch_size: int, seed: int, workers: int) -> Any:
        """A fixed-order loader over held-out data, from the cache when training uses it."""
        if self.source is not None:
            return cached_loader(dataset, self.source, batch_size, self.ctx, seed=seed,
                                 shuffle=False)[0]
        return make_loader(dataset, batch_size, self.ctx, seed=seed, workers=workers,
                           shuffle=False)[0]

    def to_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [t.to(self.ctx.device, non_blocking=True,
                     memory_format=torch.channels_last if t.dim() == 4 else torch.preserve_format)
                for t in tensors]

    def optimise(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a training checkpoint: weights, optimiser and scaler state, counters."""
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.step = int(state["step"])

    def state(self, *, epoch: int, metrics: dict[str, float], finished: bool,
              feature_mode: str, config: dict[str, Any], syncnet: str = "") -> dict[str, Any]:
        return training_state(kind=self.kind, model=self.raw_model, optimizer=self.optimizer,
                              scaler=self.scaler, epoch=epoch, step=self.step,
                              feature_mode=feature_mode, config=config, metrics=metrics,
                              finished=finished, world_size=self.ctx.world_size,
                              rank=self.ctx.rank, syncnet=syncnet)

    @abstractmethod
    def train_step(self, batch: list[torch.Tensor]) -> dict[str, float]:
        """One optimiser step on one batch; returns its scalars (must include "loss")."""

    def evaluate(self) -> dict[str, float]:
        """Held-out figures after an epoch (identical on every rank)."""
        return {}

    @abstractmethod
    def save(self, epoch: int, metrics: dict[str, float], finished: bool) -> None:
        """Write the checkpoint of a completed epoch (called on rank 0 only)."""

    def fit(self) -> dict[str, float]:
        """Train from `start_epoch` to `epochs`; returns the last epoch's metrics."""
        per_epoch = len(self.loader)
        bar = tqdm(total=self.epochs * per_epoch, initial=self.start_epoch * per_epoch,
                   desc=self.kind, unit="step", disable=not self.ctx.is_main, dynamic_ncols=True)
        metrics: dict[str, float] = {}
        try:
            for epoch in range(self.start_epoch, self.epochs):
                metrics = self._epoch(epoch, bar)
        finally:
            bar.close()
        return metrics

    def _epoch(self, epoch: int, bar: tqdm) -> dict[str, float]:
        started = time.perf_counter()
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self.model.train()
        sums: dict[str, float] = {}
        for batch in self.loader:
            parts = self.train_step(batch)
            self.history.append(parts)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{parts['loss']:.4f}")
            self.scalars.write(self.step, parts, "train/")
        steps = max(1, len(self.loader))
        metrics = mean_across({k: v / steps for k, v in sums.items()}, self.ctx)
        metrics.update(self.evaluate())
        if self.ctx.is_main:
            self.scalars.write(self.step, metrics, "epoch/")
            log.info(f"{self.kind}_epoch", epoch=epoch + 1, epochs=self.epochs, step=self.step,
                     seconds=round(time.perf_counter() - started, 2),
                     **{k: round(v, 5) for k, v in metrics.items()})
            self.save(epoch + 1, metrics, finished=epoch + 1 == self.epochs)
        barrier(self.ctx)
        return metrics
