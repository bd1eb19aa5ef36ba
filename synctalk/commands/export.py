"""`synctalk export`: write a U-Net checkpoint (and the AVE audio encoder) as ONNX files.

`--checkpoint PATH` exports one U-Net checkpoint (a project checkpoint or a raw SyncTalk_2D
state dict); `--name AVATAR` exports every `checkpoints/unet_<mode>.pt` of an avatar. Each
export is checked against torch on a random input before it is reported. Whisper features
run in CTranslate2 and have no ONNX export; the AVE encoder is exported when `--encoder` (or
`models.ave_checkpoint`) names its weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synctalk.config import Settings, load_settings
from synctalk.log import configure_logging

if TYPE_CHECKING:
    from synctalk.models.unet import UNet328


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export U-Net checkpoints (and the AVE encoder) to ONNX")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a U-Net checkpoint (.pt / .pth)")
    source.add_argument("--name", help="an avatar name (under models.avatars_dir) or folder: "
                                       "export each of its checkpoints/unet_<mode>.pt")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: beside each checkpoint)")
    p.add_argument("--encoder", type=Path, default=None,
                   help="AVE audio_visual_encoder.pth to export too "
                        "(default: models.ave_checkpoint when set)")
    p.add_argument("--int8", action="store_true",
                   help="also build the int8 graph, calibrated and checked on the avatar's "
                        "frames (needs the checkpoint inside an avatar folder); it is cached "
                        "beside the checkpoint, where the renderer's int8 runner finds it")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the ONNX Runtime vs torch check")
    p.set_defaults(func=run)


def avatar_checkpoints(name: str, settings: Settings) -> list[Path]:
    from synctalk.avatar.layout import checkpoints_dir, unet_path
    from training.pipeline import resolve_avatar_dir

    avatar = resolve_avatar_dir(name, settings)
    if not avatar.is_dir():
        raise FileNotFoundError(f"no avatar {name!r} (looked for {avatar})")
    found = [unet_path(avatar, mode) for mode in ("ave", "whisper")
             if unet_path(avatar, mode).is_file()]
    if not found:
        raise FileNotFoundError(f"{checkpoints_dir(avatar)}: no unet_<mode>.pt to export")
    return found


def verify(onnx_model: bytes, model: UNet328) -> float:
    """Max |ONNX Runtime - torch| on one random input (batch 2: the batch axis is dynamic)."""
    from synctalk.models.runners import OrtUNetRunner, TorchUNetRunner
    from synctalk.models.unet import IMAGE_SHAPE

    rng = np.random.default_rng(0)
    image = rng.random((2, *IMAGE_SHAPE), np.float32)
    audio = rng.random((2, *model.audio_shape), np.float32)
    expected = TorchUNetRunner(model)(image, audio)
    got = OrtUNetRunner(onnx_model, model.audio_shape)(image, audio)
    return float(np.abs(expected - got).max())


def export_checkpoint(checkpoint: Path, out_dir: Path | None, int8: bool,
                      check: bool) -> list[str]:
    """Export one checkpoint; returns the report lines."""
    from synctalk.models.int8 import INT8_MAX_MEAN_ABS_DIFF, avatar_calibration
    from synctalk.models.onnx_cache import cache_path, int8_onnx, source_key
    from synctalk.models.onnx_export import atomic_write, unet_onnx_bytes
    from synctalk.models.unet import load_unet

    model = load_unet(checkpoint)
    folder = out_dir or checkpoint.parent
    stem = checkpoint.name.rsplit(".", 1)[0]
    data = unet_onnx_bytes(model, {"synctalk.source": source_key(checkpoint)})
    path = folder / f"{stem}.onnx"
    atomic_write(data, path)
    lines = [f"unet    {path}  ({len(data) / 1e6:.1f} MB, mode {model.audio_mode}, "
             f"width {model.width:g})"]
    if check:
        lines.append(f"        max |onnxruntime - torch| = {verify(data, model):.2e}")
    if int8:
        quantized, record = int8_onnx(checkpoint, data, model.audio_shape, 0,
                                      lambda: avatar_calibration(checkpoint, model.audio_mode))
        if "reason" in record:
            lines.append(f"int8    not built: {record['reason']}")
        elif quantized is None:
            lines.append(f"int8    rejected: mean |int8 - fp32| {record['mean_abs_diff']} grey "
                         f"levels on {record['check_frames']} held-out frames (bound "
                         f"{INT8_MAX_MEAN_ABS_DIFF:g}); the renderer stays fp32")
        else:
            q_path = cache_path(checkpoint, "int8")  # written by int8_onnx
            if out_dir is not None:
                q_path = out_dir / f"{stem}.int8.onnx"
                atomic_write(quantized, q_path)
            lines.append(f"int8    {q_path}  ({len(quantized) / 1e6:.1f} MB, recipe "
                         f"{record['recipe']}, mean |int8 - fp32| {record['mean_abs_diff']} "
                         f"grey levels on {record['check_frames']} held-out frames)")
    if model.audio_mode == "whisper":
        lines.append("whisper features come from CTranslate2: no encoder to export")
    return lines


def export_encoder(encoder: Path, out_dir: Path) -> str:
    from synctalk.models.audio_encoder import load_audio_encoder
    from synctalk.models.onnx_export import export_audio_encoder

    path = export_audio_encoder(load_audio_encoder(encoder), out_dir / "audio_encoder.onnx")
    return f"encoder {path}  ({path.stat().st_size / 1e6:.1f} MB, mel [B,1,80,16] -> [B,512])"


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("export", settings.log_format, settings.log_level)
    try:
        if args.checkpoint is not None:
            if not args.checkpoint.is_file():
                raise FileNotFoundError(f"{args.checkpoint}: no such file")
            checkpoints = [args.checkpoint]
        else:
            checkpoints = avatar_checkpoints(args.name, settings)
        lines: list[str] = []
        for checkpoint in checkpoints:
            lines += export_checkpoint(checkpoint, args.out, args.int8, not args.no_verify)
        encoder = args.encoder or (Path(settings.models.ave_checkpoint)
                                   if settings.models.ave_checkpoint else None)
        if encoder is not None:
            lines.append(export_encoder(encoder, args.out or checkpoints[0].parent))
    except (FileNotFoundError, ValueError) as exc:
        print(f"synctalk export: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
