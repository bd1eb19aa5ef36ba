"""U-Net training: L1 + 10 x sync (frozen SyncNet) + SSIM (+ 0.01 x VGG19 with local weights).

SyncTalk_2D's recipe (Adam, a random reference frame per sample, constant learning rate; the
profile sets batch and rate) with a checkpoint after every epoch, `--resume`, AMP on CUDA and
DDP. The sync term's weight passes the sync gate (`training.sync_gate`) first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synctalk.avatar.layout import logs_dir, unet_path
from synctalk.log import get_logger
from training.cache import training_cache
from training.checkpoints import (
    latest_epoch_checkpoint,
    load_checkpoint,
    remove_unet_run,
    save_unet_epoch,
)
from training.datasets import AvatarArrays, CropFn, UNetDataset
from training.distributed import DistContext, barrier
from training.loop import EpochTrainer
from training.losses import LossWeights, UNetLoss, load_vgg19
from training.metrics import ScalarLog
from training.profiles import Profile
from training.sync_gate import decide_sync_weight
from training.syncnet_train import load_frozen_syncnet, syncnet_heldout_accuracy

log = get_logger("training.unet")


def build_unet(feature_mode: str, width: float = 1.0) -> torch.nn.Module:
    from synctalk.models.unet import UNet328

    return UNet328(audio_mode=feature_mode, width=width)


class UNetTrainer(EpochTrainer):
    kind = "unet"

    def __init__(self, avatar_dir: Path, data: AvatarArrays, feature_mode: str,
                 profile: Profile, ctx: DistContext, *, syncnet_checkpoint: Path | None,
                 vgg_weights: Path | None = None, crop: CropFn | None = None) -> None:
        p = profile.unet
        data = data.limit(p.max_frames)
        self.avatar_dir = Path(avatar_dir)
        self.feature_mode = feature_mode
        self.profile = profile
        self.syncnet_checkpoint = syncnet_checkpoint
        cache = training_cache(avatar_dir, data, profile, ctx, crop)
        torch.manual_seed(profile.seed)  # the same initial weights in every run and on every rank
        super().__init__(model=build_unet(feature_mode, p.width),
                         dataset=UNetDataset(data, profile.seed, crop), batch_size=p.batch_size,
                         lr=p.lr, epochs=p.epochs, ctx=ctx, seed=profile.seed,
                         workers=p.workers, amp=p.amp,
                         scalars=ScalarLog(logs_dir(avatar_dir), f"unet_{feature_mode}",
                                           ctx.is_main),
                         cache=cache, amp_dtype=profile.amp_dtype, compile=profile.compile)
        syncnet = (load_frozen_syncnet(syncnet_checkpoint, feature_mode, ctx.device)
                   if syncnet_checkpoint else None)
        self.sync_gate = decide_sync_weight(
            p.sync_weight, p.sync_gate, p.sync_weight_below_gate,
            syncnet_heldout_accuracy(syncnet_checkpoint) if syncnet_checkpoint else None,
        ) if syncnet else None
        vgg = load_vgg19(vgg_weights).to(ctx.device) if vgg_weights else None
        weights = LossWeights(l1=p.l1_weight,
                              sync=self.sync_gate.weight if self.sync_gate else 0.0,
                              ssim=p.ssim_weight, vgg=p.vgg_weight if vgg else 0.0)
        self.loss = UNetLoss(weights, syncnet, vgg)
        log.info("unet_losses", l1=weights.l1, sync=weights.sync, ssim=weights.ssim,
                 vgg=weights.vgg, syncnet=str(syncnet_checkpoint or "none"),
                 perceptual=f"vgg19 from {vgg_weights}" if vgg else
                 "off (no local VGG19 weights; pass --vgg-weights)",
                 augmentation="none", frames=len(data), device=str(ctx.device),
                 amp=str(self.amp_dtype) if self.use_amp else "off", compiled=self.compiled,
                 cached_data=cache is not None, batch_size=p.batch_size, lr=p.lr,
                 sync_gate=self.sync_gate.reason if self.sync_gate else "no SyncNet",
                 world_size=ctx.world_size)

    def config(self) -> dict[str, Any]:
        width = self.profile.unet.width
        return {"profile": self.profile.to_dict(), "width": width,
                "unet": {"audio_mode": self.feature_mode, "width": width},
                "losses": vars(self.loss.weights).copy(),
                "sync_gate": self.sync_gate.to_dict() if self.sync_gate else None}

    def train_step(self, batch: list[torch.Tensor]) -> dict[str, float]:
        inp, target, audio = self.to_device(*batch)
        with self.autocast():
            pred = self.model(inp, audio)
            loss, parts = self.loss(pred, target, audio)
        self.optimise(loss)
        return parts

    def save(self, epoch: int, metrics: dict[str, float], finished: bool) -> None:
        state = self.state(epoch=epoch, metrics=metrics, finished=finished,
                           feature_mode=self.feature_mode, config=self.config(),
                           syncnet=str(self.syncnet_checkpoint or ""))
        path = save_unet_epoch(self.avatar_dir, state, self.profile.unet.keep,
                               self.profile.unet.average_last)
        log.info("unet_checkpoint", path=str(path), stable=str(unet_path(self.avatar_dir,
                                                                          self.feature_mode)))


def unet_finished(avatar_dir: Path, mode: str, epochs: int) -> bool:
    """True when the stable checkpoint already holds `epochs` epochs."""
    path = unet_path(avatar_dir, mode)
    return path.is_file() and int(load_checkpoint(path).get("epoch", 0)) >= epochs


def warm_start(trainer: UNetTrainer, path: Path) -> None:
    """Start from another U-Net's weights (another avatar's, or an earlier run whose optimiser
    state is gone): same feature mode and width; a fresh optimiser, epochs counted from 0."""
    state = load_checkpoint(path)
    if state.get("kind") != "unet":
        raise ValueError(f"--init-from {path}: not a U-Net checkpoint (kind {state.get('kind')!r})")
    if state.get("feature_mode") != trainer.feature_mode:
        raise ValueError(f"--init-from {path}: trained for {state.get('feature_mode')!r} "
                         f"features, this run uses {trainer.feature_mode!r}")
    width = float(state.get("config", {}).get("width", 1.0))
    if width != trainer.profile.unet.width:
        raise ValueError(f"--init-from {path}: U-Net width {width}, the "
                         f"{trainer.profile.name!r} profile trains width "
                         f"{trainer.profile.unet.width}")
    trainer.raw_model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                       for k, v in state["model"].items()})
    log.info("unet_init_from", checkpoint=str(path), trained_epochs=state.get("epoch"),
             lr=trainer.profile.unet.lr)


def train_unet(avatar_dir: Path, data: AvatarArrays, feature_mode: str, profile: Profile,
               ctx: DistContext, *, syncnet_checkpoint: Path | None, resume: bool = False,
               vgg_weights: Path | None = None, crop: CropFn | None = None,
               init_from: Path | None = None) -> UNetTrainer:
    """Train the avatar's U-Net, continuing from its newest epoch checkpoint with `resume`,
    or starting from the weights of `init_from`."""
    if resume and init_from is not None:
        raise ValueError("--resume and --init-from exclude each other: resume continues this "
                         "avatar's run, --init-from starts a new one from other weights")
    trainer = UNetTrainer(avatar_dir, data, feature_mode, profile, ctx,
                          syncnet_checkpoint=syncnet_checkpoint, vgg_weights=vgg_weights,
                          crop=crop)
    if init_from is not None:
        warm_start(trainer, init_from)  # before an old run (which may hold it) is removed
    latest = latest_epoch_checkpoint(avatar_dir, feature_mode)
    if resume and latest is not None:
        state = load_checkpoint(latest)
        if state.get("feature_mode") != feature_mode:
            raise ValueError(f"{latest} was trained for {state.get('feature_mode')!r}")
        trainer.load_state(state)
        log.info("unet_resume", checkpoint=str(latest), epoch=trainer.start_epoch,
                 step=trainer.step)
    elif latest is not None:
        if ctx.is_main:
            remove_unet_run(avatar_dir, feature_mode)
            log.warning("unet_restart", removed_up_to=str(latest),
                        hint="started from scratch; pass --resume to continue a run")
        barrier(ctx)
    trainer.fit()
    return trainer
