"""Trim a trained avatar into the small folder the repository bundles (`assets/avatars/demo`).

`python -m training.package_demo SRC DST --frames N [--quality Q]` keeps the first N frames
(re-encoded as JPEG at quality Q), their boxes and landmarks, the truth of a synthetic clip,
and the model-only U-Net and SyncNet checkpoints (no optimiser state): what the renderer and
`synctalk evaluate` read, and nothing that only training needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from synctalk.avatar.layout import (
    BOXES_FILE,
    FRAMES_DIR,
    LANDMARKS_FILE,
    checkpoints_dir,
    frame_name,
    read_meta,
    write_meta,
)
from training.checkpoints import inference_state, load_checkpoint


def slim_checkpoint(src: Path, dst: Path, half: bool = False) -> None:
    """The checkpoint without optimiser and scaler state, loadable with weights_only=True;
    `half` stores float weights as fp16 (the SyncNet only scores, at half the size)."""
    slim = inference_state(load_checkpoint(src))
    if half:
        slim["model"] = {k: v.half() if v.is_floating_point() else v
                         for k, v in slim["model"].items()}
    torch.save(slim, dst)


def trim_truth(src: Path, dst: Path, frames: int) -> None:
    """Per-frame arrays cut to `frames` rows; scalars and the text kept."""
    truth = dict(np.load(src))
    per_frame = len(truth["mouth_open"])
    out = {k: (v[:frames] if v.ndim and len(v) == per_frame else v) for k, v in truth.items()}
    np.savez_compressed(dst, **out)


def package(src: Path, dst: Path, frames: int, quality: int = 90) -> Path:
    meta = read_meta(src)
    if not 2 <= frames <= meta.num_frames:
        raise ValueError(f"--frames: expected 2..{meta.num_frames}, got {frames}")
    if dst.exists():
        shutil.rmtree(dst)
    (dst / FRAMES_DIR).mkdir(parents=True)
    for i in range(frames):
        image = cv2.imread(str(src / meta.frames / frame_name(i)))
        if image is None:
            raise FileNotFoundError(f"{src / meta.frames / frame_name(i)} is missing")
        cv2.imwrite(str(dst / FRAMES_DIR / frame_name(i)), image,
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
    for name in (BOXES_FILE, LANDMARKS_FILE):
        np.save(dst / name, np.load(src / name)[:frames])
    if (src / "truth.npz").is_file():
        trim_truth(src / "truth.npz", dst / "truth.npz", frames)
    out_ckpt = checkpoints_dir(dst)
    out_ckpt.mkdir()
    for path in sorted(checkpoints_dir(src).glob("*.pt")):
        if "_epoch" not in path.name:
            slim_checkpoint(path, out_ckpt / path.name, half=path.name.startswith("syncnet"))
    extra = {k: v for k, v in meta.extra.items() if k not in ("source", "audio")}
    extra["trimmed_from"] = meta.num_frames
    write_meta(dst, dataclasses.replace(meta, num_frames=frames, frames=FRAMES_DIR, extra=extra,
                                        complete=True))
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a trained avatar folder")
    parser.add_argument("dst", type=Path, help="the folder to write (replaced)")
    parser.add_argument("--frames", type=int, default=250, help="frames to keep")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    args = parser.parse_args(argv)
    try:
        out = package(args.src, args.dst, args.frames, args.quality)
    except (FileNotFoundError, ValueError) as exc:
        print(f"package_demo: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {args.frames} frames, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
