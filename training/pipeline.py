"""prepare -> features -> SyncNet -> U-Net for one avatar, skipping the steps already done
(SyncTalk_2D's training_328.sh as one call that can be re-run and resumed).

Under torchrun, rank 0 alone prepares the avatar and extracts its features while the other
ranks wait; both trainings then run on every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synctalk.avatar.frames import open_frames
from synctalk.avatar.layout import (
    AUDIO_FILE,
    BOXES_FILE,
    audio_encoder_record,
    features_path,
    has_frames_and_boxes,
    record_audio_encoder,
    syncnet_path,
    unet_path,
)
from synctalk.config import Settings
from synctalk.features.encoder_info import AudioEncoderInfo, describe_audio_encoder
from synctalk.log import get_logger
from training.cache import training_cache
from training.checkpoints import latest_epoch_checkpoint, load_checkpoint
from training.datasets import AvatarArrays, CropFn
from training.distributed import DistContext, barrier
from training.profiles import Profile
from training.syncnet_train import syncnet_finished, syncnet_heldout_accuracy, train_syncnet
from training.unet_train import train_unet, unet_finished

log = get_logger("training.pipeline")


@dataclass(frozen=True)
class TrainRequest:
    name: str  # an avatar name under `models.avatars_dir`, or an avatar folder
    profile: Profile
    feature_mode: str = "ave"
    resume: bool = False
    vgg_weights: Path | None = None
    init_from: Path | None = None  # U-Net weights to start from (fresh optimiser)


@dataclass(frozen=True)
class TrainResult:
    avatar_dir: Path
    syncnet: Path
    unet: Path
    last_epoch: Path | None
    syncnet_heldout_accuracy: float | None = None
    sync_gate: dict[str, Any] | None = None  # the U-Net's SyncGateDecision, as saved
    audio_encoder: AudioEncoderInfo | None = None  # what the features were made with


def read_summary(syncnet: Path, unet: Path) -> tuple[float | None, dict[str, Any] | None]:
    """The SyncNet's held-out accuracy and the sync gate's decision, from the checkpoints (so
    a run whose steps were all skipped reports them too)."""
    accuracy = syncnet_heldout_accuracy(syncnet) if syncnet.is_file() else None
    gate = load_checkpoint(unet).get("config", {}).get("sync_gate") if unet.is_file() else None
    return accuracy, gate


def resolve_avatar_dir(name: str, settings: Settings) -> Path:
    """A path that exists is the avatar folder itself; otherwise a name in the avatar store."""
    path = Path(name)
    if path.is_dir():
        return path
    return Path(settings.models.avatars_dir) / name


def ensure_prepared(avatar_dir: Path, settings: Settings) -> None:
    """Run avatar preparation (frames, landmarks, crop boxes, audio) unless it is done."""
    if has_frames_and_boxes(avatar_dir):
        log.info("step_skipped", step="prepare", avatar=str(avatar_dir))
        return
    try:
        from synctalk.avatar import prepare_avatar
    except ImportError as exc:
        raise FileNotFoundError(f"{avatar_dir} is not a prepared avatar (no {BOXES_FILE} and "
                                f"frames); run `synctalk prepare` first ({exc})") from exc
    log.info("step_started", step="prepare", avatar=str(avatar_dir))
    prepare_avatar(avatar_dir, settings)


def ensure_features(avatar_dir: Path, mode: str, settings: Settings) -> Path:
    """Extract the avatar's per-frame audio features offline unless the file exists."""
    path = features_path(avatar_dir, mode)
    if path.is_file():
        log.info("step_skipped", step="features", path=str(path))
        warn_if_encoder_changed(avatar_dir, mode, settings)
        return path
    from synctalk.audio.decode import load_audio
    from synctalk.features import get_extractor

    log.info("step_started", step="features", mode=mode)
    features = get_extractor(mode, settings.models).extract(load_audio(avatar_dir / AUDIO_FILE))
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, features.astype(np.float32))
    os.replace(tmp, path)
    encoder = describe_audio_encoder(settings.models, mode)
    record_audio_encoder(avatar_dir, mode, encoder.record())
    log.info("step_done", step="features", path=str(path), frames=len(features),
             encoder=encoder.label)
    return path


def trained_against(avatar_dir: Path, mode: str, settings: Settings) -> AudioEncoderInfo:
    """The encoder avatar.json records for `mode`, else (features from before the record
    existed) the configured one."""
    record = audio_encoder_record(avatar_dir, mode)
    if record is not None:
        return AudioEncoderInfo.from_record(record)
    return describe_audio_encoder(settings.models, mode)


def warn_if_encoder_changed(avatar_dir: Path, mode: str, settings: Settings) -> None:
    """Kept features go on training against the encoder that made them, even after
    `models.ave_checkpoint` changed: say so, and how to start again."""
    recorded = trained_against(avatar_dir, mode, settings)
    configured = describe_audio_encoder(settings.models, mode)
    if (recorded.trained, Path(recorded.checkpoint).name) != (
            configured.trained, Path(configured.checkpoint).name):
        log.warning("features.other_encoder", features=recorded.label,
                    configured=configured.label,
                    hint=f"delete {features_path(avatar_dir, mode).name} and "
                         f"checkpoints/*_{mode}*.pt, then train again")


def load_training_arrays(avatar_dir: Path, mode: str) -> AvatarArrays:
    """Frames (read lazily), crop boxes and features of a prepared avatar."""
    features = np.load(features_path(avatar_dir, mode), mmap_mode="r")
    boxes = np.load(avatar_dir / BOXES_FILE)
    return AvatarArrays(open_frames(avatar_dir), boxes, features)


def run_pipeline(request: TrainRequest, settings: Settings, ctx: DistContext, *,
                 crop: CropFn | None = None) -> TrainResult:
    avatar_dir = resolve_avatar_dir(request.name, settings)
    mode = request.feature_mode
    if ctx.is_main:
        ensure_prepared(avatar_dir, settings)
        ensure_features(avatar_dir, mode, settings)
    barrier(ctx)
    data = load_training_arrays(avatar_dir, mode)
    profile = request.profile
    todo = {"syncnet": not syncnet_finished(avatar_dir, mode),
            "unet": request.init_from is not None
            or not unet_finished(avatar_dir, mode, profile.unet.epochs)}
    if crop is None and any(todo.values()):
        # One cache for both trainings, of the larger of their frame counts (0 = all).
        limits = [getattr(profile, k).max_frames for k, run in todo.items() if run]
        training_cache(avatar_dir, data.limit(0 if 0 in limits else max(limits)), profile, ctx)

    if not todo["syncnet"]:
        log.info("step_skipped", step="syncnet", path=str(syncnet_path(avatar_dir, mode)))
    else:
        train_syncnet(avatar_dir, data, mode, profile, ctx, resume=request.resume, crop=crop)
    barrier(ctx)

    if not todo["unet"]:
        log.info("step_skipped", step="unet", path=str(unet_path(avatar_dir, mode)))
    else:
        train_unet(avatar_dir, data, mode, profile, ctx,
                   syncnet_checkpoint=syncnet_path(avatar_dir, mode), resume=request.resume,
                   vgg_weights=request.vgg_weights, crop=crop, init_from=request.init_from)
    syncnet, unet = syncnet_path(avatar_dir, mode), unet_path(avatar_dir, mode)
    return TrainResult(avatar_dir, syncnet, unet, latest_epoch_checkpoint(avatar_dir, mode),
                       *read_summary(syncnet, unet),
                       audio_encoder=trained_against(avatar_dir, mode, settings))
