"""Batches cut from the training cache on the training device: no decoding, no workers.

A drop-in for the DataLoader over `UNetDataset` / `SyncPairs`: the same DistributedSampler
order and the datasets' own seeded draws (reference frames, negative audio), so for one seed
it yields the loader's samples bit for bit. Only the pixels change hands: the cached uint8
crops are gathered by index (from device memory when they fit there, else from the
memory-mapped file), windowed to 320 px, scaled to 0-1 and masked on the device, in the
channels-last layout the trainers use.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from kernels.reference import MASK_COLS, MASK_ROWS, RING, WINDOW
from synctalk.log import get_logger
from training.cache import TrainingCache
from training.datasets import SyncPairs, UNetDataset
from training.distributed import DistContext

log = get_logger("training.cache")
# The share of the GPU's free memory the cache may take; the rest is for the step.
DEVICE_SHARE = 0.5
_INV255 = np.float32(1.0 / 255.0)


class DeviceCache:
    """The cache's arrays where the step can gather from them: device tensors on a GPU with
    room for them, else the host arrays (gathered rows are copied over per batch)."""

    def __init__(self, cache: TrainingCache, device: torch.device) -> None:
        self.device = device
        self.host = cache
        self.resident = device.type != "cpu" and _fits(cache.nbytes, device)
        self.crops: torch.Tensor | None = None
        self.features: torch.Tensor | None = None
        if self.resident:
            self.crops = _upload(cache.crops, device)
            self.features = torch.from_numpy(cache.features).to(device)
        self.scale = torch.tensor(_INV255, device=device)
        log.info("training_cache_device", device=str(device), resident=self.resident,
                 frames=len(cache), gigabytes=round(cache.nbytes / 1e9, 3))

    def gather_crops(self, index: np.ndarray) -> torch.Tensor:
        """uint8 [B,328,328,3] on the device."""
        if self.crops is not None:
            return self.crops[torch.from_numpy(index).to(self.device)]
        return torch.from_numpy(self.host.crops[index]).to(self.device, non_blocking=True)

    def gather_features(self, index: np.ndarray) -> torch.Tensor:
        if self.features is not None:
            return self.features[torch.from_numpy(index).to(self.device)]
        return torch.from_numpy(self.host.features[index]).to(self.device, non_blocking=True)

    def faces(self, index: np.ndarray) -> torch.Tensor:
        """The 320 px windows as float32 0-1 BGR [B,3,320,320] (channels-last): the same
        uint8 -> float32 times float32(1/255) product the CPU crop kernel computes."""
        crops = self.gather_crops(index)
        window = crops[:, RING:RING + WINDOW, RING:RING + WINDOW].permute(0, 3, 1, 2)
        return window * self.scale  # one pass: uint8 promoted to float32 in the multiply


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_SHARE * free


def _upload(array: np.ndarray, device: torch.device, chunk: int = 256) -> torch.Tensor:
    """Copy a memory-mapped array to the device in slices (never all of it in host RAM)."""
    out = torch.empty(array.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(array), chunk):
        out[start:start + chunk] = torch.from_numpy(np.array(array[start:start + chunk]))
    return out


def masked(faces: torch.Tensor) -> torch.Tensor:
    out = faces.clone()
    out[:, :, MASK_ROWS[0]:MASK_ROWS[1], MASK_COLS[0]:MASK_COLS[1]] = 0
    return out


class CachedBatches:
    """Iterates one epoch of batches like `DataLoader(dataset, batch_size, sampler=sampler)`
    (the last batch may be short); `set_epoch` on the sampler and dataset as before."""

    def __init__(self, dataset: UNetDataset | SyncPairs, source: DeviceCache,
                 sampler: DistributedSampler, batch_size: int) -> None:
        if len(source.host) < len(dataset.avatar):
            raise ValueError(f"the training cache holds {len(source.host)} frames, the data "
                             f"{len(dataset.avatar)}")
        self.dataset = dataset
        self.source = source
        self.sampler = sampler
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        order = list(self.sampler)
        for start in range(0, len(order), self.batch_size):
            yield self.batch(order[start:start + self.batch_size])

    def batch(self, items: list[int]) -> list[torch.Tensor]:
        if isinstance(self.dataset, UNetDataset):
            return self._unet(items)
        return self._sync(items)

    def _unet(self, items: list[int]) -> list[torch.Tensor]:
        """(input [B,6,...]: reference window, masked target window; target; audio)."""
        target_index = np.asarray(items, np.int64)
        ref_index = np.asarray([self.dataset.reference_index(i) for i in items], np.int64)
        target = self.source.faces(target_index)
        inp = torch.cat([self.source.faces(ref_index), masked(target)], dim=1)
        return [inp, target, self.source.gather_features(target_index)]

    def _sync(self, items: list[int]) -> list[torch.Tensor]:
        """(face [B,3,...], audio, label): even items positives, odd shifted negatives."""
        pairs = self.dataset
        assert isinstance(pairs, SyncPairs)
        frame_index = np.asarray([int(pairs.frames[k // 2]) for k in items], np.int64)
        audio_index = np.asarray([int(pairs.frames[k // 2]) if pairs.label(k) else
                                  pairs.negative_index(k) for k in items], np.int64)
        labels = torch.tensor([float(pairs.label(k)) for k in items], device=self.source.device)
        return [self.source.faces(frame_index), self.source.gather_features(audio_index), labels]


def cached_loader(dataset: UNetDataset | SyncPairs, source: DeviceCache, batch_size: int,
                  ctx: DistContext, *, seed: int,
                  shuffle: bool) -> tuple[CachedBatches, DistributedSampler]:
    """This rank's shard of `dataset` from the cache: `make_loader`'s order and batches."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=shuffle, seed=seed)
    return CachedBatches(dataset, source, sampler, batch_size), sampler
