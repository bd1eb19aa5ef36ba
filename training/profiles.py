"""Training profiles: `default` follows SyncTalk_2D, `tiny` runs the same code on a CPU in seconds.

`tiny` keeps the real U-Net (it is fixed by the checkpoints the renderer loads) and the real
SyncNet layout at 1/8 width, uses a handful of frames, batch 1-2 and a few epochs, so tests
exercise every code path (datasets, crops, losses, checkpoints, resume, DDP) cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class NetProfile:
    """What training any of the networks needs; each network's profile adds its own."""

    width: float = 1.0  # channel multiplier; 1.0 is SyncTalk_2D's network
    lr: float = 1e-3
    max_frames: int = 0  # 0 = every frame of the avatar
    workers: int = 4


@dataclass(frozen=True)
class SyncNetProfile(NetProfile):
    batch_size: int = 16
    # SyncTalk_2D ran 100 epochs of positives only; each epoch here has a negative per
    # positive, so 50 epochs show the network as many pairs.
    epochs: int = 50
    holdout_fraction: float = 0.1  # the last frames, for held-out accuracy
    min_offset: int = 5  # negatives: audio at least this many frames (200 ms) away


@dataclass(frozen=True)
class UNetProfile(NetProfile):
    # `width` 1.0 is SyncTalk_2D's U-Net (its checkpoints load); smaller nets train on a CPU
    # in minutes (the bundled demo avatar).
    batch_size: int = 8
    epochs: int = 100
    l1_weight: float = 1.0
    sync_weight: float = 10.0
    ssim_weight: float = 0.2
    vgg_weight: float = 0.01  # used only with local VGG19 weights (--vgg-weights)
    amp: bool = True  # CUDA only
    # The sync gate: the sync term gets `sync_weight` only when the SyncNet's held-out
    # accuracy reaches `sync_gate` (0 = always); below it, `sync_weight_below_gate`. On an
    # H200 test avatar the SyncNet stayed at chance (0.50-0.58) while weighted 10x: a
    # SyncNet at chance only teaches the generator patterns that fool it.
    sync_gate: float = 0.65
    sync_weight_below_gate: float = 0.0
    keep: int = 5  # per-epoch checkpoints kept (0 = all)
    # The renderer's checkpoint holds the mean weights of the newest N epochs (1 = the newest).
    average_last: int = 1


@dataclass(frozen=True)
class Profile:
    name: str
    syncnet: SyncNetProfile = field(default_factory=SyncNetProfile)
    unet: UNetProfile = field(default_factory=UNetProfile)
    seed: int = 0
    # Crops cut once into `<avatar>/cache/training/` and batched from there (on a GPU from
    # device memory when they fit) instead of a DataLoader decoding frames every epoch.
    cached_data: bool = True
    amp_dtype: str = "bf16"  # or "fp16" (with a gradient scaler); CUDA only, bf16 where supported
    compile: bool = False  # torch.compile the trained network (CUDA only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    # SyncTalk_2D's recipe (U-Net batch 8, SyncNet 16, both at lr 1e-3) at 4x the batch, to
    # fill a GPU fed from the device cache, with the learning rate scaled by sqrt(4) = 2: the
    # square-root rule usual for Adam (the linear rule's 4e-3 is the riskier choice).
    "default": Profile(
        "default",
        syncnet=SyncNetProfile(batch_size=64, lr=2e-3),
        unet=UNetProfile(batch_size=32, lr=2e-3),
    ),
    "tiny": Profile(
        "tiny",
        syncnet=SyncNetProfile(width=0.125, batch_size=4, epochs=3, max_frames=24,
                               holdout_fraction=0.25, min_offset=3, workers=0),
        unet=UNetProfile(batch_size=1, epochs=2, max_frames=2, keep=0, workers=0, sync_gate=0.0),
    ),
    # The bundled demo avatar: quarter-width networks that a 2-core CPU trains in about an
    # hour on two minutes of synthetic talking head (docs/training-guide.md).
    "demo": Profile(
        "demo",
        syncnet=SyncNetProfile(width=0.25, batch_size=16, epochs=1, max_frames=1200, workers=1),
        # Sync at 0.3, not 10: with a SyncNet trained for one short epoch, SyncTalk_2D's 10x
        # outweighed L1 forty-fold and the generator painted patterns that fool the SyncNet.
        unet=UNetProfile(width=0.25, batch_size=8, epochs=11, max_frames=800, sync_weight=0.3,
                         keep=2, workers=1),
    ),
    # Its second stage (`--init-from` the 11-epoch U-Net): every frame of the clip, so the
    # mouth meets more speech, at half the learning rate and batch 4, which on a CPU costs less
    # per sample and gives twice the updates.
    "demo-finetune": Profile(
        "demo-finetune",
        syncnet=SyncNetProfile(width=0.25, batch_size=16, epochs=1, max_frames=1200, workers=1),
        unet=UNetProfile(width=0.25, batch_size=4, lr=5e-4, epochs=6, max_frames=0,
                         sync_weight=0.3, keep=2, workers=1),
    ),
    # Its third stage (`--init-from` the second): sync at 0.03. At 0.3 the sync term was three
    # quarters of the loss and never fell (0.39-0.40 over six epochs, the SyncNet being weak);
    # with it lowered, L1 sharpens the lips. The renderer gets the mean of the last three
    # epochs, which single epochs' 0.5 dB swings do not move (bench/RESULTS.md "Demo avatar").
    "demo-polish": Profile(
        "demo-polish",
        syncnet=SyncNetProfile(width=0.25, batch_size=16, epochs=1, max_frames=1200, workers=1),
        unet=UNetProfile(width=0.25, batch_size=4, lr=2.5e-4, epochs=9, max_frames=0,
                         sync_weight=0.03, keep=3, average_last=3, workers=1),
    ),
}


def get_profile(name: str, *, epochs: int | None = None, lr: float | None = None,
                sync_gate: float | None = None) -> Profile:
    """A named profile; `epochs`, `lr` and `sync_gate` override the U-Net's (`--epochs`,
    `--lr`, `--sync-gate`)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    profile = PROFILES[name]
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        profile = replace(profile, unet=replace(profile.unet, epochs=epochs))
    if lr is not None:
        if not 0 < lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {lr}")
        profile = replace(profile, unet=replace(profile.unet, lr=lr))
    if sync_gate is not None:
        if not 0 <= sync_gate <= 1:
            raise ValueError(f"sync gate must be a held-out accuracy in [0, 1], got {sync_gate}")
        profile = replace(profile, unet=replace(profile.unet, sync_gate=sync_gate))
    return profile


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """Rebuild a profile saved in a checkpoint's config."""
    extra = {k: data[k] for k in ("cached_data", "amp_dtype", "compile") if k in data}
    return Profile(data["name"], SyncNetProfile(**data["syncnet"]), UNetProfile(**data["unet"]),
                   data.get("seed", 0), **extra)
