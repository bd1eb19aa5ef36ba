"""`synctalk evaluate NAME (--text T | --text-file F | --audio WAV)`: lip-sync quality figures.

`--text` (or `--text-file`) has piper speak held-out text, so a synthetic avatar's true mouth
is known and every figure is reported; `--audio` takes any recording, for which only the
loudness correlation and the SyncNet figures exist. See training/evaluate.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from synctalk.commands.model_options import MODE_HELP, with_model_options
from synctalk.config import load_settings
from synctalk.features.encoder_info import AudioEncoderInfo
from synctalk.log import configure_logging

ROWS = (
    ("frames", "frames", "{:d}"),
    ("seconds", "audio seconds", "{:.2f}"),
    ("faces_found", "faces found", "{:.1%}"),
    ("mouth_psnr_db", "mouth PSNR dB", "{:.2f}"),
    ("mouth_ssim", "mouth SSIM", "{:.3f}"),
    ("open_vs_truth_r", "opening r (truth)", "{:.3f}"),
    ("truth_landmarks_vs_truth_r", "  same measure on truth frames", "{:.3f}"),
    ("open_vs_loudness_r", "opening r (loudness)", "{:.3f}"),
    ("lookahead_trim", "look-ahead trim (rows)", "{:d}"),
    ("sync_offset", "SyncNet best offset (frames)", "{:d}"),
    ("lse_d", "SyncNet distance (LSE-D)", "{:.3f}"),
    ("lse_c", "SyncNet confidence (LSE-C)", "{:.3f}"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="lip-sync quality of a trained avatar on unseen speech")
    p.add_argument("name", help="avatar name (under models.avatars_dir) or avatar folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="held-out text for piper to speak (ground truth known)")
    src.add_argument("--text-file", type=Path, help="the same, read from a UTF-8 file")
    src.add_argument("--audio", type=Path, help="any audio file (no mouth ground truth)")
    p.add_argument("--truth", type=Path, default=None,
                   help="the avatar's truth.npz (default: in the avatar folder or dataset/NAME/)")
    p.add_argument("--feature-mode", default=None, choices=["ave", "whisper"], help=MODE_HELP)
    p.add_argument("--lookahead-trim", type=int, default=0, metavar="N",
                   help="render with the features live input gets: each frame's last N of 7 "
                        "future context rows left out (services.live_lookahead_trim; default 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.set_defaults(func=run)


def format_report(figures: dict[str, object]) -> str:
    lines = []
    for key, label, fmt in ROWS:
        value = figures.get(key)
        shown = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else fmt.format(value)
        lines.append(f"{label:<32} {shown}")
    return "\n".join(lines + encoder_lines(figures))


def encoder_lines(figures: dict[str, object]) -> list[str]:
    """The audio encoder used now and the one the avatar was trained against, each warned
    about when untrained: figures from an untrained encoder say little about lip sync."""
    used, recorded = figures.get("audio_encoder"), figures.get("trained_against")
    if not isinstance(used, dict):
        return []
    infos = [AudioEncoderInfo.from_record(used)]
    if isinstance(recorded, dict):
        infos.append(AudioEncoderInfo.from_record(recorded))
    lines = [f"{'audio encoder':<32} {infos[0].label}",
             f"{'avatar trained against':<32} "
             f"{infos[1].label if len(infos) > 1 else 'not recorded'}"]
    return lines + list(dict.fromkeys(info.warning for info in infos if info.warning))


def run(args: argparse.Namespace) -> int:
    from synctalk.audio.decode import AudioDecodeError, load_audio
    from synctalk.audio.windows import check_trim
    from training.evaluate import HeldOut, evaluate, held_out_from_text

    settings = load_settings()
    configure_logging("evaluate", settings.log_format, "WARNING")
    from synctalk.commands.infer import InferError, resolve_avatar_dir

    try:
        avatar_dir = resolve_avatar_dir(args.name, settings.models.avatars_dir)
    except InferError as exc:
        print(f"synctalk evaluate: {exc}", file=sys.stderr)
        return 2
    models = with_model_options(settings.models, args, avatar_dir)
    try:
        if args.audio is not None:
            held, label = HeldOut(load_audio(args.audio)), str(args.audio)
        else:
            text = args.text if args.text is not None else args.text_file.read_text("utf-8")
            if not text.strip():
                raise ValueError("the held-out text is empty")
            held, label = held_out_from_text(text), f"piper: {text[:40]!r}"
        check_trim(args.lookahead_trim)
        report = evaluate(args.name, held, models, truth_path=args.truth, audio_label=label,
                          lookahead_trim=args.lookahead_trim)
    except (AudioDecodeError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"synctalk evaluate: {exc}", file=sys.stderr)
        return 2
    figures = report.as_dict()
    print(format_report(figures))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0
