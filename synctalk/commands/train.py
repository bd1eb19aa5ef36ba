"""`synctalk train NAME`: prepare the avatar, extract features, train SyncNet, then the U-Net.

Several GPUs: `torchrun --nproc-per-node N -m synctalk train NAME` (one process per GPU).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from synctalk.commands.model_options import add_model_options, with_model_options
from synctalk.config import load_settings
from synctalk.features.encoder_info import AudioEncoderInfo
from synctalk.log import configure_logging
from training.profiles import PROFILES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an avatar: prepare -> features -> SyncNet -> U-Net")
    p.add_argument("name", help="avatar name (under models.avatars_dir) or avatar folder")
    p.add_argument("--profile", default="default", choices=sorted(PROFILES),
                   help="training profile (default: SyncTalk_2D's; demo: quarter-width nets "
                        "for a CPU; tiny: a few CPU steps, for tests)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest saved epoch, optimiser state included")
    p.add_argument("--epochs", type=int, default=None, help="U-Net epochs (profile default)")
    p.add_argument("--lr", type=float, default=None, help="U-Net learning rate (profile default)")
    p.add_argument("--sync-gate", type=float, default=None, metavar="ACCURACY",
                   help="SyncNet held-out accuracy the U-Net's sync loss needs for its profile "
                        "weight (below it: the profile's lower weight, default off; 0 = no "
                        "gate; profile default)")
    p.add_argument("--init-from", type=Path, default=None, metavar="CHECKPOINT",
                   help="start the U-Net from these weights (same feature mode and width) with "
                        "a fresh optimiser, e.g. another avatar's unet_ave.pt; not with --resume")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks (CUDA only; slower start, faster steps)")
    add_model_options(p, device_help="where to train",
                      mode_help="audio features (default: models.train_feature_mode, whisper; "
                                "an avatar that already has a U-Net in one mode goes on in it)")
    p.add_argument("--vgg-weights", type=Path, default=None,
                   help="local torchvision vgg19 state dict: adds the 0.01 x VGG perceptual loss")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.checkpoints import DiskFullError
    from training.distributed import init_distributed, shutdown
    from training.pipeline import TrainRequest, resolve_avatar_dir, run_pipeline
    from training.profiles import get_profile

    settings = load_settings()
    try:
        profile = get_profile(args.profile, epochs=args.epochs, lr=args.lr,
                              sync_gate=args.sync_gate)
        if args.compile:
            profile = replace(profile, compile=True)
    except ValueError as exc:
        print(f"synctalk train: {exc}", file=sys.stderr)
        return 2
    if args.vgg_weights is not None and not args.vgg_weights.is_file():
        print(f"synctalk train: --vgg-weights {args.vgg_weights}: no such file", file=sys.stderr)
        return 2
    if args.init_from is not None and not args.init_from.is_file():
        print(f"synctalk train: --init-from {args.init_from}: no such file", file=sys.stderr)
        return 2
    if args.init_from is not None and args.resume:
        print("synctalk train: --resume and --init-from exclude each other", file=sys.stderr)
        return 2
    if settings.models.threads > 0:
        # On a CPU shared with other processes, fewer OpenMP threads than cores avoids
        # barrier stalls: one thread trained the demo U-Net 5x faster than two on 2 busy cores.
        import torch

        torch.set_num_threads(settings.models.threads)
    models = with_model_options(settings.models, args, resolve_avatar_dir(args.name, settings),
                                settings.models.train_feature_mode)
    ctx = init_distributed(models.device)
    level = settings.log_level if ctx.is_main else "WARNING"
    configure_logging("train", settings.log_format, level)
    request = TrainRequest(args.name, profile, models.feature_mode,
                           args.resume, args.vgg_weights, args.init_from)
    try:
        result = run_pipeline(request, settings, ctx)
    except (FileNotFoundError, ValueError) as exc:
        print(f"synctalk train: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:
        print(f"synctalk train: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(f"avatar:  {result.avatar_dir}")
        print(f"syncnet: {result.syncnet}")
        print(f"unet:    {result.unet}   (the renderer loads this one)")
        if result.last_epoch is not None:
            print(f"resume:  {result.last_epoch}   (synctalk train {args.name} --resume)")
        for line in summary_lines(result.syncnet_heldout_accuracy, result.sync_gate,
                                  result.audio_encoder):
            print(line)
    return 0


def summary_lines(accuracy: float | None, gate: dict[str, Any] | None,
                  encoder: AudioEncoderInfo | None = None) -> list[str]:
    """The SyncNet's held-out accuracy, the sync weight the U-Net trained with and the audio
    encoder its features came from (warned about when untrained)."""
    shown = "not measured" if accuracy is None else f"{accuracy:.3f} (0.5 is chance)"
    lines = [f"syncnet held-out accuracy: {shown}"]
    if gate:
        verdict = "at or above" if gate["passed"] else "below"
        lines.append(f"unet sync weight: {gate['weight']:g} (profile {gate['profile_weight']:g}; "
                     f"held-out accuracy {verdict} the gate {gate['threshold']:g})")
    if encoder is not None:
        lines.append(f"audio encoder: {encoder.label}")
        if encoder.warning:
            lines.append(encoder.warning)
    return lines
