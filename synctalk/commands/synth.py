"""`synctalk synth`: render a synthetic talking head (the bundled NASA portrait speaking with
the piper voice) with per-frame ground truth, as `<out>/<name>/<name>.mp4` + `truth.npz`.

The default `--out dataset` gives SyncTalk_2D's layout, so `synctalk prepare NAME` finds it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synctalk.config import load_settings
from synctalk.log import configure_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render a synthetic talking-head video with ground truth")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", default=None, help="what the head says (default: a built-in paragraph)")
    text.add_argument("--text-file", type=Path, default=None, help="read the text from this file")
    p.add_argument("--seconds", type=float, default=None,
                   help="clip length: the text repeats until then (default: as long as the speech)")
    p.add_argument("--out", type=Path, default=Path("dataset"), help="parent folder (default: dataset)")
    p.add_argument("--name", default="synthetic", help="clip name: writes OUT/NAME/NAME.mp4")
    p.add_argument("--size", type=int, default=512, help="frame width and height in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the head motion and blinks")
    p.add_argument("--motion", type=float, default=2.0, help="head drift amplitude in pixels (0 = still)")
    p.add_argument("--no-blink", action="store_true", help="never blink")
    p.add_argument("--face", type=Path, default=None, help="face photo (default: assets/faces/astronaut.jpg)")
    p.add_argument("--head-model", choices=("landmark-warp", "jaw-drop"), default="landmark-warp",
                   help="how the mouth moves: landmark-warp (the photo's own lips and jaw, "
                        "default) or jaw-drop (the legacy model of the bundled demo)")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"synctalk synth: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from synctalk.avatar import valid_avatar_name
    from training.synthetic import DEFAULT_TEXT, ClipRequest, make_clip

    settings = load_settings()
    configure_logging("synth", settings.log_format, settings.log_level)
    if not valid_avatar_name(args.name):
        return _fail(f"invalid name {args.name!r}")
    if args.seconds is not None and not 0 < args.seconds <= 3600:
        return _fail("--seconds must be in (0, 3600]")
    if not 64 <= args.size <= 2048:
        return _fail("--size must be in [64, 2048]")
    text = args.text if args.text is not None else DEFAULT_TEXT
    if args.text_file is not None:
        try:
            text = args.text_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"cannot read {args.text_file}: {exc}")
    if not text.strip():
        return _fail("the text is empty")
    request = ClipRequest(out_dir=args.out, name=args.name, text=text, seconds=args.seconds,
                          size=args.size, seed=args.seed, motion_px=max(0.0, args.motion),
                          blink=not args.no_blink, face=args.face, head_model=args.head_model)
    try:
        clip = make_clip(request)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    print(f"video: {clip.video}  ({clip.num_frames} frames, {clip.seconds:.2f} s)")
    print(f"truth: {clip.truth}")
    return 0
