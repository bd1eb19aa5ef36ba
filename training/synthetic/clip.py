"""A synthetic talking-head clip with known ground truth: text -> piper speech -> visemes ->
rendered frames -> `<out>/<name>/<name>.mp4` (SyncTalk_2D's dataset layout, so
`synctalk prepare <name>` picks it up) and `truth.npz`.

truth.npz, one row per 25 fps frame: `mouth_open` (0..1), `mouth_open_px` (output pixels),
`mouth_width` (factor), `face_box` (x0, y0, x1, y1 of the face, output pixels), `mouth_centre`,
`head` (dx, dy px, roll degrees), `blink` (0..1), `loudness` (RMS of the frame's audio, 0..1);
scalars `fps`, `sample_rate`, `size`, `max_open_px`, `seed`, `text`, and `head_model` (the
head model's name, `training.synthetic.models`; absent in files of the legacy jaw-drop model).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synctalk.audio.pcm import SAMPLE_RATE, resample
from synctalk.log import get_logger
from training.synthetic.face import build_rig, load_face_photo
from training.synthetic.models import DEFAULT_HEAD_MODEL, head_model_name, make_renderer
from training.synthetic.render import HeadState, blinks, head_motion
from training.synthetic.speech import speak
from training.synthetic.visemes import frame_loudness, frame_track
from training.synthetic.writer import write_mp4, write_truth

log = get_logger("training.synthetic")

FPS = 25
DEFAULT_TEXT = (
    "Hello there! I am a synthetic talking head, made from a photograph. "
    "My jaw opens and closes with every word: papa, mama, bob. "
    "A quick brown fox jumps over the lazy dog, while five wise owls watch the moon."
)


@dataclass(frozen=True)
class ClipRequest:
    out_dir: Path = Path("dataset")
    name: str = "synthetic"
    text: str = DEFAULT_TEXT
    seconds: float | None = None  # None: as long as the speech (+0.5 s of silence each side)
    size: int = 512
    seed: int = 0
    motion_px: float = 2.0  # head drift amplitude; 0 = still head
    blink: bool = True
    face: Path | None = None  # default: assets/faces/astronaut.jpg
    sample_rate: int = SAMPLE_RATE  # of the clip's audio track
    head_model: str = DEFAULT_HEAD_MODEL  # training.synthetic.models.HEAD_MODELS


@dataclass
class Clip:
    video: Path
    truth: Path
    num_frames: int
    seconds: float
    arrays: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def make_clip(request: ClipRequest) -> Clip:
    """Render and write one clip; the same request always gives the same frames and truth."""
    head_model = head_model_name(request.head_model)
    folder = Path(request.out_dir) / request.name
    folder.mkdir(parents=True, exist_ok=True)
    speech = speak(request.text, request.seconds)
    num_frames = int(round(speech.seconds * FPS))
    loud = frame_loudness(speech.audio, speech.sample_rate, num_frames, FPS)
    if speech.phones:
        opening, width = frame_track(speech.phones, speech.sample_rate, speech.audio.size,
                                     num_frames, FPS, loudness=loud)
    else:
        opening, width = loud, np.ones(num_frames, np.float32)
    motion = head_motion(num_frames, request.motion_px, request.seed, FPS)
    blink = blinks(num_frames, request.seed, FPS) if request.blink else np.zeros(num_frames, np.float32)

    rig = build_rig(load_face_photo(request.face), request.size)
    renderer = make_renderer(rig, head_model)
    states = [HeadState(float(opening[i]), float(width[i]), float(blink[i]),
                        float(motion[i, 0]), float(motion[i, 1]), float(motion[i, 2]))
              for i in range(num_frames)]

    def frames() -> Iterator[np.ndarray]:
        for state in states:
            yield renderer.render(state)

    audio = resample(speech.audio, speech.sample_rate, request.sample_rate)
    video = folder / f"{request.name}.mp4"
    write_mp4(video, frames(), audio, request.sample_rate, FPS)
    mouth = np.array([rig.mouth_centre_x, rig.mouth_line_y], np.float32)
    arrays = {
        "mouth_open": opening.astype(np.float32),
        "mouth_open_px": (opening * renderer.max_open_px).astype(np.float32),
        "mouth_width": width.astype(np.float32),
        "face_box": np.stack([renderer.face_box(s) for s in states]).astype(np.float32),
        "mouth_centre": np.stack([renderer.to_output(mouth, s)[0] for s in states]).astype(np.float32),
        "head": motion.astype(np.float32),
        "blink": blink.astype(np.float32),
        "loudness": loud.astype(np.float32),
        "fps": np.int32(FPS),
        "sample_rate": np.int32(request.sample_rate),
        "size": np.int32(request.size),
        "max_open_px": np.float32(renderer.max_open_px),
        "seed": np.int32(request.seed),
        "text": np.array(request.text),
        "head_model": np.array(head_model),
    }
    truth = folder / "truth.npz"
    write_truth(truth, **arrays)
    log.info("synthetic_clip", video=str(video), head_model=head_model, frames=num_frames,
             seconds=round(speech.seconds, 2), phones=len(speech.phones),
             max_open_px=round(renderer.max_open_px, 1))
    return Clip(video, truth, num_frames, num_frames / FPS, arrays)
