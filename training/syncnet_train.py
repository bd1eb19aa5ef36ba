"""SyncNet training on real positive and negative pairs, with held-out accuracy per epoch.

Positives pair a frame's mouth crop with its own audio window, negatives with the window of a
frame at least `min_offset` frames away (label 0), one of each per frame and epoch. The last
`holdout_fraction` of the frames is never trained on; accuracy there (cosine > 0.5 counts as
"in sync") says whether the expert learned something the U-Net's sync loss can use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synctalk.avatar.layout import logs_dir, syncnet_path
from synctalk.log import get_logger
from synctalk.models.syncnet import SyncNet, build_syncnet, sync_bce, syncnet_config
from training.cache import training_cache
from training.checkpoints import atomic_save, load_checkpoint
from training.datasets import AvatarArrays, CropFn, SyncPairs, split_holdout
from training.distributed import DistContext, sum_across, unwrap
from training.loop import EpochTrainer
from training.metrics import ScalarLog
from training.profiles import Profile

log = get_logger("training.syncnet")
THRESHOLD = 0.5


def _accuracy_sums(prob: torch.Tensor, label: torch.Tensor) -> float:
    return float(((prob > THRESHOLD).float() == label).sum())


class SyncNetTrainer(EpochTrainer):
    kind = "syncnet"

    def __init__(self, avatar_dir: Path, data: AvatarArrays, feature_mode: str,
                 profile: Profile, ctx: DistContext, crop: CropFn | None = None) -> None:
        p = profile.syncnet
        data = data.limit(p.max_frames)
        train_frames, held_frames = split_holdout(len(data), p.holdout_fraction)
        train = SyncPairs(data, train_frames, profile.seed, p.min_offset, crop)
        self.heldout = SyncPairs(data, held_frames, profile.seed, p.min_offset, train.crop) \
            if len(held_frames) else None
        self.avatar_dir = Path(avatar_dir)
        self.feature_mode = feature_mode
        self.profile = profile
        cache = training_cache(avatar_dir, data, profile, ctx, crop)
        torch.manual_seed(profile.seed)  # the same initial weights in every run and on every rank
        super().__init__(model=SyncNet(feature_mode, p.width), dataset=train,
                         batch_size=p.batch_size, lr=p.lr, epochs=p.epochs, ctx=ctx,
                         seed=profile.seed, workers=p.workers, amp=True,
                         scalars=ScalarLog(logs_dir(avatar_dir), f"syncnet_{feature_mode}",
                                           ctx.is_main),
                         cache=cache, amp_dtype=profile.amp_dtype, compile=profile.compile)
        self.heldout_loader = self.fixed_loader(self.heldout, p.batch_size, profile.seed,
                                                p.workers) if self.heldout is not None else None
        log.info("syncnet_data", frames=len(data), train_pairs=len(train),
                 heldout_pairs=len(self.heldout) if self.heldout else 0,
                 min_offset=p.min_offset, width=p.width, device=str(ctx.device))

    def config(self) -> dict[str, Any]:
        return {"profile": self.profile.to_dict(), "syncnet": syncnet_config(self.raw_model)}

    def train_step(self, batch: list[torch.Tensor]) -> dict[str, float]:
        face, audio, label = self.to_device(*batch)
        with self.autocast():
            prob = self.model(face, audio)
        loss = sync_bce(prob, label)
        self.optimise(loss)
        return {"loss": loss.item(), "accuracy": _accuracy_sums(prob.detach(), label) / len(label),
                "positive_rate": float(label.mean())}

    def evaluate(self) -> dict[str, float]:
        if self.heldout_loader is None:
            return {}
        model = unwrap(self.model).eval()
        sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        with torch.no_grad(), self.autocast():
            for batch in self.heldout_loader:
                face, audio, label = self.to_device(*batch)
                prob = model(face, audio)
                sums["loss"] += float(sync_bce(prob, label)) * len(label)
                sums["correct"] += _accuracy_sums(prob, label)
                sums["count"] += len(label)
        total = sum_across(sums, self.ctx)
        count = max(total["count"], 1.0)
        return {"heldout_loss": total["loss"] / count, "heldout_accuracy": total["correct"] / count}

    def save(self, epoch: int, metrics: dict[str, float], finished: bool) -> None:
        atomic_save(self.state(epoch=epoch, metrics=metrics, finished=finished,
                               feature_mode=self.feature_mode, config=self.config()),
                    syncnet_path(self.avatar_dir, self.feature_mode))


def syncnet_finished(avatar_dir: Path, mode: str) -> bool:
    path = syncnet_path(avatar_dir, mode)
    return path.is_file() and bool(load_checkpoint(path).get("finished"))


def train_syncnet(avatar_dir: Path, data: AvatarArrays, feature_mode: str, profile: Profile,
                  ctx: DistContext, *, resume: bool = False,
                  crop: CropFn | None = None) -> SyncNetTrainer:
    """Train (or, with `resume`, continue) the avatar's SyncNet; returns the trainer."""
    trainer = SyncNetTrainer(avatar_dir, data, feature_mode, profile, ctx, crop)
    path = syncnet_path(avatar_dir, feature_mode)
    if resume and path.is_file():
        state = load_checkpoint(path)
        _check_mode(state, feature_mode, path)
        trainer.load_state(state)
        log.info("syncnet_resume", checkpoint=str(path), epoch=trainer.start_epoch)
    trainer.fit()
    return trainer


def syncnet_heldout_accuracy(path: Path) -> float | None:
    """The held-out accuracy of a SyncNet checkpoint's last epoch (None when not measured)."""
    value = load_checkpoint(path).get("metrics", {}).get("heldout_accuracy")
    return None if value is None else float(value)


def load_frozen_syncnet(path: Path, feature_mode: str,
                        device: torch.device | str = "cpu") -> SyncNet:
    """The trained expert for the U-Net's sync loss (eval mode, no gradients)."""
    state = load_checkpoint(path)
    _check_mode(state, feature_mode, path)
    model = build_syncnet(state["config"]["syncnet"])
    model.load_state_dict(state["model"])
    return model.to(device).eval().requires_grad_(False)


def _check_mode(state: dict[str, Any], feature_mode: str, path: Path) -> None:
    if state.get("feature_mode") != feature_mode:
        raise ValueError(f"{path} was trained for feature mode {state.get('feature_mode')!r}, "
                         f"not {feature_mode!r}")
