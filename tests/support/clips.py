"""Synthetic talking-head clips, rendered once per session, and a frame reader."""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np

from training.synthetic import DEFAULT_HEAD_MODEL, ClipRequest, make_clip

TEXT = "Papa bought a big map. Wow, what a day!"
_CLIPS: dict[str, Path] = {}
_ROOTS: list[Path] = []


def _root() -> Path:
    """A temporary folder for the session's clips, removed when the process exits."""
    if not _ROOTS:
        _ROOTS.append(Path(tempfile.mkdtemp(prefix="synctalk-synth-")))
        atexit.register(shutil.rmtree, _ROOTS[0], ignore_errors=True)
    return _ROOTS[0]


def _build(kind: str) -> Path:
    root = _root()
    if kind == "moving":
        from synctalk.commands import synth

        parser = argparse.ArgumentParser()
        synth.register(parser.add_subparsers())
        args = parser.parse_args(["synth", "--text", TEXT, "--seconds", "3", "--out", str(root),
                                  "--name", "moving", "--motion", "3"])
        assert args.func(args) == 0
        return root / "moving" / "moving.mp4"
    if kind in ("still", "still-jaw-drop"):
        model = "jaw-drop/1" if kind == "still-jaw-drop" else DEFAULT_HEAD_MODEL
        return make_clip(ClipRequest(out_dir=root, name=kind, text=TEXT, seconds=2.4,
                                     motion_px=0.0, head_model=model)).video
    raise ValueError(kind)


def synthetic_clip(kind: str) -> Path:
    """Path of the session's `kind` clip (rendered on first use)."""
    if kind not in _CLIPS or not _CLIPS[kind].is_file():
        _CLIPS[kind] = _build(kind)
    return _CLIPS[kind]


def read_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
