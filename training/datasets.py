"""Training samples cut from an avatar: U-Net inputs and SyncNet pairs with real negatives.

Crops come from `kernels.crop_mask`, the function the renderer uses, so a network trains on
exactly the crops it will see. Random choices (reference frames, negative audio) are drawn
from a generator seeded by (seed, epoch, index): the same epoch gives the same samples in
every run and on every rank, which is what makes `--resume` continue the identical run.

Augmentation: none, as in SyncTalk_2D. The avatar is one person under one light, and the
renderer feeds that same footage back in; colour jitter would teach the U-Net to reproduce
shifts it never meets at inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

CropFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def default_crop() -> CropFn:
    """The shared crop-and-mask kernel: [B,H,W,3] BGR uint8 + [B,4] boxes -> [B,6,320,320]."""
    try:
        from kernels import crop_mask
    except ImportError:
        from kernels.crop_mask import crop_mask
    return crop_mask


@dataclass
class AvatarArrays:
    """What training reads from an avatar: frame i as BGR uint8 [H,W,3], its square crop box
    (x0, y0, x1, y1) and its audio features [*shape]. `frames` may be an array or a lazy
    reader with `__len__` and `__getitem__`."""

    frames: Sequence[np.ndarray] | np.ndarray
    boxes: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        n = min(len(self.frames), len(self.boxes), len(self.features))
        if n < 2:
            raise ValueError(f"an avatar needs at least 2 frames with boxes and features, got {n}")
        self.count = n

    def __len__(self) -> int:
        return self.count

    def limit(self, max_frames: int) -> AvatarArrays:
        """The first `max_frames` frames (0 = all)."""
        if max_frames <= 0 or max_frames >= self.count:
            return self
        return AvatarArrays(self.frames, self.boxes[:max_frames], self.features[:max_frames])


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng((seed, epoch, index))


class _EpochSeeded(Dataset):
    """A dataset whose random draws depend on (seed, epoch, index) only."""

    def __init__(self, avatar: AvatarArrays, seed: int, crop: CropFn | None) -> None:
        self.avatar = avatar
        self.seed = seed
        self.epoch = 0
        self.crop = crop or default_crop()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def crops(self, indices: Sequence[int]) -> np.ndarray:
        frames = np.stack([np.asarray(self.avatar.frames[i]) for i in indices])
        return self.crop(frames, np.asarray(self.avatar.boxes)[list(indices)])


class UNetDataset(_EpochSeeded):
    """Item i: (input [6,320,320], target [3,320,320], audio [*shape]).

    Input channels 0-2 are the unmasked crop of a random *other* frame (SyncTalk_2D's
    reference), 3-5 the masked crop of frame i; the target is frame i's unmasked crop.
    """

    def __len__(self) -> int:
        return len(self.avatar)

    def reference_index(self, index: int) -> int:
        other = int(_rng(self.seed, self.epoch, index).integers(len(self.avatar) - 1))
        return other + (other >= index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target, reference = self.crops([index, self.reference_index(index)])
        inp = np.concatenate([reference[:3], target[3:]])
        audio = np.array(self.avatar.features[index], np.float32)
        return torch.from_numpy(inp), torch.from_numpy(target[:3].copy()), torch.from_numpy(audio)


def split_holdout(count: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first frames, hold out the last `fraction` (at least 2 each side): a
    contiguous tail keeps held-out faces away from their neighbours in the training set."""
    held = int(round(count * fraction)) if fraction > 0 else 0
    if held:
        held = min(max(held, 2), count - 2)
    return np.arange(count - held), np.arange(count - held, count)


class SyncPairs(_EpochSeeded):
    """Item k: (face [3,320,320], audio [*shape], label). Even k pairs frame `frames[k//2]`
    with its own audio (label 1); odd k with the audio of a frame at least `min_offset`
    frames away (label 0): the negatives SyncTalk_2D's SyncNet never saw."""

    def __init__(self, avatar: AvatarArrays, frames: np.ndarray, seed: int, min_offset: int,
                 crop: CropFn | None = None) -> None:
        super().__init__(avatar, seed, crop)
        if len(frames) == 0:
            raise ValueError("SyncPairs needs at least one frame")
        self.frames = np.asarray(frames)
        self.min_offset = min_offset
        if len(avatar) < 2 * min_offset + 1:
            raise ValueError(f"no audio is {min_offset} frames away in {len(avatar)} frames")

    def __len__(self) -> int:
        return 2 * len(self.frames)

    def negative_index(self, k: int) -> int:
        """Audio from the same split when it has a frame far enough away, else from anywhere."""
        i = int(self.frames[k // 2])
        candidates = self.frames[np.abs(self.frames - i) >= self.min_offset]
        if len(candidates) == 0:
            everywhere = np.arange(len(self.avatar))
            candidates = everywhere[np.abs(everywhere - i) >= self.min_offset]
        return int(_rng(self.seed, self.epoch, k).choice(candidates))

    def label(self, k: int) -> int:
        return 1 if k % 2 == 0 else 0

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = int(self.frames[k // 2])
        audio_index = i if self.label(k) else self.negative_index(k)
        face = self.crops([i])[0, :3]
        audio = np.array(self.avatar.features[audio_index], np.float32)
        return (torch.from_numpy(face.copy()), torch.from_numpy(audio),
                torch.tensor(float(self.label(k))))
