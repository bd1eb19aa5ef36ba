"""A picture of avatars speaking the same speech: one row of mouth crops per avatar, at the
same moments (the docs' before/after strips).

    python -m training.demo_strip AVATAR [AVATAR ...] --out docs/images/demo-speaking.jpg
        [--text "..."] [--frames 6] [--labels old new]

Piper speaks `--text`; each avatar renders it exactly as `synctalk infer` does (in the mode it
was trained in), and the same output frames are cut to the lower face (the frame's crop box)
and laid side by side, the first avatar on top.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

TEXT = "Please open the window, because it is getting quite warm in this little room."
TILE = 200


def pick_frames(audio: np.ndarray, count: int) -> list[int]:
    """`count` output frames spread over the speech, each at a loud moment of its stretch."""
    from synctalk.audio.levels import frame_levels

    rms, _ = frame_levels(audio)
    voiced = np.flatnonzero(rms > 0.25 * rms.max())
    stretches = np.array_split(np.arange(voiced[0], voiced[-1] + 1), count)
    return [int(s[np.argmax(rms[s])]) for s in stretches if len(s)]


def mouth_tile(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The mouth: the middle of the crop box (which spans nose to chin), as a TILE square."""
    x0, y0, x1, y1 = (int(v) for v in box)
    side = max(x1 - x0, 1)
    top = y0 + int(0.1 * (y1 - y0))
    cx = (x0 + x1) // 2
    crop = frame[top: top + int(0.7 * side),
                 max(cx - int(0.35 * side), 0): cx + int(0.35 * side)]
    return cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA)


def avatar_row(name: str, wav: Path, picks: list[int], label: str) -> np.ndarray:
    from synctalk.avatar import PingPong, load_avatar
    from synctalk.avatar.layout import feature_modes, mode_for_avatar
    from synctalk.commands.infer import infer, resolve_avatar_dir
    from synctalk.config import load_settings

    models = load_settings().models
    folder = resolve_avatar_dir(name, models.avatars_dir)
    models = models.model_copy(update={"feature_mode": mode_for_avatar(
        models.feature_mode, feature_modes(folder))})
    avatar = load_avatar(folder)
    walk = PingPong(avatar.num_frames, 0)
    tiles: dict[int, np.ndarray] = {}

    def keep(index: int, image: np.ndarray) -> None:
        if index in picks:
            tiles[index] = mouth_tile(image, avatar.boxes[walk.index(index)])

    with tempfile.TemporaryDirectory() as tmp:
        infer(name, wav, models, Path(tmp) / "out.mp4", progress=False, on_frame=keep)
    row = np.concatenate([tiles[i] for i in picks], axis=1)
    cv2.putText(row, f"{label} ({models.feature_mode})", (6, 22), cv2.FONT_HERSHEY_SIMPLEX,
                0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", help="avatar names or folders, one row each")
    parser.add_argument("--out", type=Path, required=True, help="the JPEG to write")
    parser.add_argument("--text", default=TEXT, help="what they say (piper joe)")
    parser.add_argument("--frames", type=int, default=6, help="frames per row")
    parser.add_argument("--labels", nargs="*", default=None, help="row labels (default: names)")
    args = parser.parse_args(argv)
    labels = args.labels or args.avatars
    if len(labels) != len(args.avatars):
        print("demo_strip: give one label per avatar", file=sys.stderr)
        return 2
    from synctalk.audio.pcm import SAMPLE_RATE, resample
    from training.synthetic.speech import speak

    speech = speak(args.text)
    audio = resample(speech.audio, speech.sample_rate, SAMPLE_RATE)
    picks = pick_frames(audio, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        sf.write(wav, audio, SAMPLE_RATE)
        rows = [avatar_row(n, wav, picks, label) for n, label in zip(args.avatars, labels,
                                                                     strict=True)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(rows, axis=0), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"{args.out}: {len(rows)} rows of {len(picks)} frames (output frames {picks})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
