"""`synctalk infer --name NAME --audio PATH`: render a lip-synced MP4 of an avatar offline.

Any audio FFmpeg decodes -> features of the chosen mode -> the renderer's frame pipeline
(the same walk, silence rule, crop, U-Net and feathered paste as the Renderer service) ->
H.264 + AAC at 25 fps, ceil(duration * 25) frames, audio at offset 0. The file appears only
when complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synctalk.commands.model_options import add_model_options, with_model_options
from synctalk.config import ModelsConfig, load_settings
from synctalk.log import configure_logging

DEFAULT_BATCH = 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="render an avatar speaking an audio file to an MP4")
    p.add_argument("--name", required=True,
                   help="avatar name (under models.avatars_dir) or avatar folder")
    p.add_argument("--audio", required=True, type=Path,
                   help="audio file (WAV, MP3, FLAC, OGG, the audio of a video, ...)")
    p.add_argument("--out", type=Path, default=None,
                   help="MP4 to write (default: result/<NAME>_<audio stem>.mp4)")
    add_model_options(p, device_help="where the models run")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help=f"frames per U-Net batch (default {DEFAULT_BATCH})")
    p.add_argument("--crop-only", action="store_true",
                   help="write the 328x328 face crop instead of the full frame")
    p.add_argument("--start-frame", type=int, default=0,
                   help="avatar frame the ping-pong walk starts at (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class InferResult:
    out: Path
    frames: int
    audio_seconds: float
    render_seconds: float  # features + frames + encoding, model loading excluded
    idle_frames: int
    cpu_seconds: float = 0.0  # process CPU time over the same span (all threads)

    @property
    def real_time_factor(self) -> float:
        return self.render_seconds / self.audio_seconds if self.audio_seconds else 0.0


class InferError(Exception):
    """A user error (missing avatar or audio, bad option): printed, exit status 2."""


def resolve_avatar_dir(name: str, avatars_dir: str) -> Path:
    """A folder given as a path, else the named avatar in the store."""
    from synctalk.avatar import valid_avatar_name

    as_path = Path(name)
    if as_path.is_dir() and (not valid_avatar_name(name) or not (Path(avatars_dir) / name).is_dir()):
        return as_path
    if not valid_avatar_name(name):
        raise InferError(f"--name {name!r}: not an avatar folder nor a valid avatar name")
    path = Path(avatars_dir) / name
    if not path.is_dir():
        raise InferError(f"--name {name!r}: no such avatar in {avatars_dir}")
    return path


def infer(name: str, audio_path: Path, models: ModelsConfig, out: Path | None = None,
          batch_size: int = DEFAULT_BATCH, crop_only: bool = False, start_frame: int = 0,
          progress: bool = True,
          on_frame: Callable[[int, np.ndarray], None] | None = None,
          lookahead_trim: int = 0) -> InferResult:
    """Render `audio_path` with avatar `name` to an MP4; InferError for user errors.

    `on_frame(index, bgr)` sees every rendered frame before it is encoded (lossless);
    `lookahead_trim` renders with the features live input gets (synctalk.audio.windows)."""
    from kernels import select_backend
    from synctalk.audio.decode import AudioDecodeError, load_audio
    from synctalk.audio.levels import frame_levels
    from synctalk.audio.pcm import SAMPLE_RATE
    from synctalk.avatar import load_avatar
    from synctalk.features import get_extractor
    from synctalk.render.idle import silence_window
    from synctalk.render.mp4 import Mp4Writer, atomic_mp4
    from synctalk.render.pipeline import FramePipeline, StreamPlan, load_render_model

    if batch_size < 1:
        raise InferError(f"--batch-size: must be >= 1, got {batch_size}")
    avatar_dir = resolve_avatar_dir(name, models.avatars_dir)
    try:
        avatar = load_avatar(avatar_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise InferError(f"avatar {name!r}: {exc}") from exc
    mode = models.feature_mode
    if not 0 <= start_frame < avatar.num_frames:
        raise InferError(f"--start-frame: expected 0..{avatar.num_frames - 1}, got {start_frame}")
    try:
        audio = load_audio(audio_path)
    except AudioDecodeError as exc:
        raise InferError(f"--audio: {exc}") from exc
    try:
        model = load_render_model(avatar, mode, models)
        extractor = get_extractor(mode, models)
        silence = silence_window(mode, models)
    except FileNotFoundError as exc:
        raise InferError(f"{exc} (train it: synctalk train {avatar.name} --feature-mode {mode})"
                         ) from exc
    except (RuntimeError, ValueError) as exc:  # no CUDA device, unreadable checkpoint
        raise InferError(f"cannot load the models: {exc}") from exc
    out = out or Path("result") / f"{avatar.name}_{Path(audio_path).stem}.mp4"
    prefer = "cpu" if models.device == "cpu" else "auto"
    pipeline = FramePipeline(select_backend(prefer))

    started, cpu_started = time.perf_counter(), time.process_time()
    features = extractor.extract(audio, lookahead_trim)
    rms, voiced = frame_levels(audio)
    plan = StreamPlan(model, start_frame, silence, crop_only)
    total = len(features)
    planned = [plan.job(i, features[i], bool(voiced[i]), float(rms[i])) for i in range(total)]
    idle_frames = sum(idle for _, idle in planned)
    jobs = [job for job, _ in planned]
    width, height = (328, 328) if crop_only else (avatar.width, avatar.height)
    bar = tqdm(total=total, unit="frame", desc=f"infer {avatar.name}", disable=not progress,
               file=sys.stderr)
    with atomic_mp4(out) as tmp, ThreadPoolExecutor(1, thread_name_prefix="infer") as pool:
        writer = Mp4Writer(tmp, width, height, audio, SAMPLE_RATE)
        try:
            batches = [jobs[lo : lo + batch_size] for lo in range(0, total, batch_size)]
            ahead = pool.submit(pipeline.render, batches[0]) if batches else None
            for k in range(len(batches)):
                current = ahead
                ahead = pool.submit(pipeline.render, batches[k + 1]) if k + 1 < len(batches) else None
                for image in current.result():  # type: ignore[union-attr]
                    if on_frame is not None:
                        on_frame(writer.frames, image)
                    writer.write(image)
                    bar.update(1)
        finally:
            if ahead is not None:
                ahead.cancel()
            writer.close()
            bar.close()
    elapsed = time.perf_counter() - started
    return InferResult(out, total, audio.size / SAMPLE_RATE, elapsed, int(idle_frames),
                       time.process_time() - cpu_started)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("infer", settings.log_format, "WARNING")
    try:
        avatar_dir = resolve_avatar_dir(args.name, settings.models.avatars_dir)
        models = with_model_options(settings.models, args, avatar_dir)
        result = infer(args.name, args.audio, models, args.out, args.batch_size, args.crop_only,
                       args.start_frame, progress=not args.no_progress)
    except InferError as exc:
        print(f"synctalk infer: {exc}", file=sys.stderr)
        return 2
    print(result.out.resolve())
    print(f"{result.frames} frames ({result.audio_seconds:.2f} s of audio, "
          f"{result.idle_frames} idle) in {result.render_seconds:.1f} s, "
          f"real-time factor {result.real_time_factor:.2f}")
    return 0

