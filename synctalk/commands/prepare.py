"""`synctalk prepare NAME`: turn a video into an avatar folder (frames, audio, landmarks, crop
boxes, avatar.json), then extract its audio features for the configured mode.

NAME is looked up as SyncTalk_2D does, `dataset/NAME/NAME.mp4` (from the working directory,
then the repository); `--video` names any other file. The avatar goes to
`<models.avatars_dir>/NAME` unless `--out` says otherwise. Re-running skips finished steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synctalk.config import REPO_ROOT, Settings, load_settings
from synctalk.log import configure_logging

EXIT_BAD_INPUT = 2
EXIT_FEATURES_FAILED = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="make an avatar from a video: 25 fps frames, 16 kHz audio, "
                                       "landmarks, crop boxes, audio features")
    p.add_argument("name", help="avatar name; the video is dataset/NAME/NAME.mp4 unless --video")
    p.add_argument("--video", type=Path, default=None, help="the source video (any container, any fps)")
    p.add_argument("--out", type=Path, default=None,
                   help="avatar folder to write (default: <models.avatars_dir>/NAME)")
    p.add_argument("--force", action="store_true", help="prepare again from scratch")
    p.add_argument("--feature-mode", default=None, choices=["ave", "whisper"],
                   help="audio features to extract (default: models.train_feature_mode, whisper)")
    p.add_argument("--no-features", action="store_true", help="skip the audio feature extraction")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def dataset_video(name: str) -> Path | None:
    """SyncTalk_2D's layout: dataset/NAME/NAME.<ext>, from the working directory or the repo."""
    from synctalk.avatar.prepare import VIDEO_EXTENSIONS

    for root in (Path.cwd(), REPO_ROOT):
        for ext in VIDEO_EXTENSIONS:
            if (candidate := root / "dataset" / name / f"{name}{ext}").is_file():
                return candidate
    return None


def _fail(message: str) -> int:
    print(f"synctalk prepare: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def prepare(name: str, video: Path | None, out: Path | None, settings: Settings, *,
            force: bool = False, feature_mode: str | None = None, features: bool = True,
            progress: bool = True) -> int:
    """The command's work, callable without argparse; returns the exit status."""
    from synctalk.avatar import PrepareError, prepare_avatar, valid_avatar_name

    if out is None and not valid_avatar_name(name):
        return _fail(f"invalid avatar name {name!r}: use letters, digits, '_', '-', '.' "
                     f"(not first), at most 64 characters")
    avatar_dir = out if out is not None else Path(settings.models.avatars_dir) / name
    if video is None:
        video = dataset_video(name) if valid_avatar_name(name) else None
        if video is None:
            return _fail(f"no video for {name!r}: expected dataset/{name}/{name}.mp4 "
                         f"(in {Path.cwd()} or {REPO_ROOT}); pass --video PATH")
    try:
        prepare_avatar(avatar_dir, settings, video, force=force, progress=progress)
    except PrepareError as exc:
        return _fail(str(exc))
    except OSError as exc:  # the output folder cannot be written, the disk is full, ...
        return _fail(f"{avatar_dir}: {exc}")
    print(f"avatar:   {avatar_dir}")
    if not features:
        return 0
    mode = feature_mode or settings.models.train_feature_mode
    from training.pipeline import ensure_features

    try:
        path = ensure_features(avatar_dir, mode, settings)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"synctalk prepare: the avatar is prepared, but its {mode} features could not be "
              f"extracted: {exc}", file=sys.stderr)
        return EXIT_FEATURES_FAILED
    print(f"features: {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("prepare", settings.log_format, settings.log_level)
    return prepare(args.name, args.video, args.out, settings, force=args.force,
                   feature_mode=args.feature_mode, features=not args.no_features,
                   progress=not args.quiet)
