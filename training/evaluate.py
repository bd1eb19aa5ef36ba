"""Lip-sync quality of a trained avatar on speech it never saw (`synctalk evaluate`).

For a synthetic avatar (one made by `synctalk synth`, whose `truth.npz` records each source
frame's head pose, blink and mouth), the ground-truth frame of output frame i is the
synthetic head re-rendered with source frame k's pose and blink (k from the same ping-pong
walk the renderer takes) and the mouth that the held-out speech's phonemes ask for. Against
it:

- mouth-region PSNR and SSIM (grey, Gaussian 11x11 windows) of the generated frames;
- the Pearson correlation between the mouth opening that dlib's landmarks measure on the
  generated frames and the true opening (and, as DESIGN §6 asks, the frame loudness);
- SyncNet confidence in the LSE-C/LSE-D style: the mean cosine distance between face and
  audio embeddings at audio offsets of -7..7 frames, its minimum (LSE-D), the offset where it
  falls (0 = in sync) and the margin of the median over the minimum (LSE-C).

Without ground truth (plain `--audio`) only the loudness correlation and SyncNet figures are
reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from synctalk.log import get_logger

log = get_logger("training.evaluate")

INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
SYNC_MAX_OFFSET = 7
FACE_BATCH = 16


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap of one face's 68 landmarks, in pixels."""
    return float(np.mean([np.linalg.norm(points[b] - points[a]) for a, b in INNER_LIP_PAIRS]))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two series; NaN when either is constant (no information)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two BGR images on their luma, Gaussian 11x11 windows (sigma 1.5)."""
    x = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def mouth_region(face_box: np.ndarray, mouth_centre: np.ndarray, max_open_px: float,
                 shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Rows and columns around the mouth, its widest opening included, inside the frame."""
    fw = float(face_box[2] - face_box[0])
    cx, cy = float(mouth_centre[0]), float(mouth_centre[1])
    x0, x1 = cx - 0.3 * fw, cx + 0.3 * fw
    y0, y1 = cy - 0.12 * fw, cy + max_open_px + 0.12 * fw
    h, w = shape[:2]
    xs = slice(max(0, int(round(x0))), min(w, int(round(x1))))
    ys = slice(max(0, int(round(y0))), min(h, int(round(y1))))
    return ys, xs


def sync_distances(face_emb: np.ndarray, audio_emb: np.ndarray,
                   max_offset: int = SYNC_MAX_OFFSET) -> dict[int, float]:
    """Mean cosine distance between face i and audio i+d for each offset d (unit embeddings)."""
    n = min(len(face_emb), len(audio_emb))
    out: dict[int, float] = {}
    for d in range(-max_offset, max_offset + 1):
        lo, hi = max(0, -d), min(n, n - d)
        if hi - lo < 1:
            continue
        cos = np.sum(face_emb[lo:hi] * audio_emb[lo + d : hi + d], axis=1)
        out[d] = float(np.mean(1.0 - cos))
    return out


@dataclass
class SyncScore:
    offset: int  # audio offset (frames) of the best agreement; 0 = in sync
    lse_d: float  # mean cosine distance there (lower is better)
    lse_c: float  # median distance over all offsets minus the minimum (higher is better)
    distances: dict[int, float] = field(repr=False)


def sync_score(distances: dict[int, float]) -> SyncScore:
    best = min(distances, key=distances.__getitem__)
    values = np.array(list(distances.values()))
    return SyncScore(best, distances[best], float(np.median(values) - distances[best]), distances)


@dataclass
class EvalReport:
    avatar: str
    audio: str
    frames: int
    seconds: float
    faces_found: float  # share of generated frames where dlib found the face
    open_vs_loudness_r: float
    open_vs_truth_r: float = math.nan
    truth_landmarks_vs_truth_r: float = math.nan  # the measurement's own ceiling
    mouth_psnr_db: float = math.nan
    mouth_ssim: float = math.nan
    sync_offset: int | None = None
    lookahead_trim: int = 0  # context rows the rendering's features left out (live input)
    lse_d: float = math.nan
    lse_c: float = math.nan
    audio_encoder: dict[str, Any] = field(default_factory=dict)  # AudioEncoderInfo.as_dict()
    trained_against: dict[str, Any] | None = None  # avatar.json's encoder record, if any

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


class SyncJudge:
    """Embeds generated faces with the avatar's trained SyncNet, batch by batch."""

    def __init__(self, checkpoint: Path, mode: str) -> None:
        from training.syncnet_train import load_frozen_syncnet

        self.model = load_frozen_syncnet(checkpoint, mode, "cpu")
        self.pending: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []

    def add(self, crop: np.ndarray) -> None:
        self.pending.append(crop)
        if len(self.pending) >= FACE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        with torch.inference_mode():
            emb = self.model.embed_face(torch.from_numpy(np.stack(self.pending)))
        self.faces.append(emb.numpy())
        self.pending.clear()

    def score(self, features: np.ndarray) -> SyncScore:
        self.flush()
        faces = np.concatenate(self.faces)
        with torch.inference_mode():
            audio = np.concatenate([
                self.model.embed_audio(torch.from_numpy(np.ascontiguousarray(
                    features[lo : lo + 64], np.float32))).numpy()
                for lo in range(0, len(features), 64)])
        return sync_score(sync_distances(faces, audio))


@dataclass
class HeldOut:
    """Speech the avatar never saw: its 16 kHz samples and, when known, the true mouth track."""

    audio: np.ndarray
    opening: np.ndarray | None = None  # 0..1 per frame
    width: np.ndarray | None = None


def held_out_from_text(text: str) -> HeldOut:
    """Piper speaks `text`; its phoneme timings give the true opening of every frame."""
    from synctalk.audio.pcm import SAMPLE_RATE, resample
    from training.synthetic.speech import speak
    from training.synthetic.visemes import frame_loudness, frame_track

    speech = speak(text)
    audio = resample(speech.audio, speech.sample_rate, SAMPLE_RATE)
    n = -(-audio.size // 640)
    loud = frame_loudness(speech.audio, speech.sample_rate, n, 25)
    opening, width = frame_track(speech.phones, speech.sample_rate, speech.audio.size, n, 25,
                                 loudness=loud)
    return HeldOut(audio, opening.astype(np.float32), width.astype(np.float32))


class TruthRenderer:
    """Ground-truth frames of a synthetic avatar for a new mouth track, by the head model that
    made its truth file (files without `head_model` are the legacy jaw-drop model's)."""

    def __init__(self, truth: dict[str, np.ndarray]) -> None:
        from training.synthetic.face import build_rig, load_face_photo
        from training.synthetic.models import head_model_of, make_renderer

        self.truth = truth
        rig = build_rig(load_face_photo(None), int(truth["size"]))
        self.renderer = make_renderer(rig, head_model_of(truth))

    def frame(self, source: int, opening: float, width: float) -> np.ndarray:
        from training.synthetic.render import HeadState

        head = self.truth["head"][source]
        state = HeadState(float(opening), float(width), float(self.truth["blink"][source]),
                          float(head[0]), float(head[1]), float(head[2]))
        return self.renderer.render(state)


def find_truth(avatar_dir: Path, name: str, explicit: Path | None) -> Path | None:
    """`--truth`, else the avatar folder's truth.npz, else dataset/NAME/truth.npz."""
    for path in (explicit, avatar_dir / "truth.npz", Path("dataset") / name / "truth.npz"):
        if path is not None and path.is_file():
            return path
    if explicit is not None:
        raise FileNotFoundError(f"--truth {explicit}: no such file")
    return None


def evaluate(name: str, held: HeldOut, models: Any, *, truth_path: Path | None = None,
             audio_label: str = "", progress: bool = True,
             render: Callable[..., Any] | None = None, lookahead_trim: int = 0) -> EvalReport:
    """Render the held-out speech with the avatar and measure it (see the module docstring);
    `lookahead_trim` renders with live input's features (SyncNet still judges against the
    whole audio)."""
    import tempfile

    import soundfile as sf

    from kernels import crop_mask
    from synctalk.audio.levels import frame_levels
    from synctalk.avatar import PingPong, load_avatar
    from synctalk.avatar.landmarks import DlibLandmarker
    from synctalk.avatar.layout import audio_encoder_record, syncnet_path
    from synctalk.commands.infer import infer, resolve_avatar_dir
    from synctalk.features import get_extractor
    from synctalk.features.encoder_info import describe_audio_encoder

    avatar_dir = resolve_avatar_dir(name, models.avatars_dir)
    avatar = load_avatar(avatar_dir)
    mode = models.feature_mode
    truth_file = find_truth(avatar_dir, avatar.name, truth_path)
    truth = dict(np.load(truth_file)) if truth_file is not None else None
    if truth is not None and len(truth["head"]) < avatar.num_frames:
        raise ValueError(f"{truth_file} covers {len(truth['head'])} frames, the avatar has "
                         f"{avatar.num_frames}: it belongs to another clip")
    truth_frames = TruthRenderer(truth) if truth is not None and held.opening is not None else None
    landmarker = DlibLandmarker()
    walk = PingPong(avatar.num_frames, 0)
    sync_ckpt = syncnet_path(avatar_dir, mode)
    judge = SyncJudge(sync_ckpt, mode) if sync_ckpt.is_file() else None
    boxes = np.asarray(avatar.boxes)

    measured: list[float] = []
    measured_truth: list[float] = []
    psnrs: list[float] = []
    ssims: list[float] = []

    def on_frame(i: int, image: np.ndarray) -> None:
        k = walk.index(i)
        found = landmarker(image)
        measured.append(mouth_opening(found.landmarks[0]) if found.count else math.nan)
        if judge is not None:
            judge.add(crop_mask(image[None], boxes[k : k + 1])[0, :3])
        if truth_frames is not None and truth is not None and held.opening is not None:
            j = min(i, len(held.opening) - 1)
            want = truth_frames.frame(k, held.opening[j], held.width[j])  # type: ignore[index]
            ys, xs = mouth_region(truth["face_box"][k], truth["mouth_centre"][k],
                                  float(truth["max_open_px"]), image.shape)
            psnrs.append(psnr(image[ys, xs], want[ys, xs]))
            ssims.append(ssim(image[ys, xs], want[ys, xs]))
            ref = landmarker(want)
            measured_truth.append(mouth_opening(ref.landmarks[0]) if ref.count else math.nan)

    with tempfile.TemporaryDirectory(prefix="synctalk-eval-") as tmp:
        wav = Path(tmp) / "heldout.wav"
        sf.write(wav, held.audio, 16000, subtype="PCM_16")
        result = (render or infer)(str(avatar_dir), wav, models, out=Path(tmp) / "eval.mp4",
                                   progress=progress, on_frame=on_frame,
                                   lookahead_trim=lookahead_trim)
    rms, _ = frame_levels(held.audio)
    opening = np.array(measured)
    n = len(opening)
    report = EvalReport(avatar.name, audio_label, n, result.audio_seconds,
                        float(np.mean(np.isfinite(opening))) if n else 0.0,
                        pearson(opening, rms[:n]),
                        audio_encoder=describe_audio_encoder(models, mode).as_dict(),
                        trained_against=audio_encoder_record(avatar_dir, mode))
    report.lookahead_trim = lookahead_trim
    if held.opening is not None:
        true_open = held.opening[:n]
        report.open_vs_truth_r = pearson(opening[: len(true_open)], true_open)
        if measured_truth:
            report.truth_landmarks_vs_truth_r = pearson(np.array(measured_truth)[: len(true_open)],
                                                        true_open)
    if psnrs:
        report.mouth_psnr_db = float(np.mean(np.minimum(psnrs, 100.0)))
        report.mouth_ssim = float(np.mean(ssims))
    if judge is not None:
        features = get_extractor(mode, models).extract(held.audio)[:n]
        score = judge.score(features)
        report.sync_offset, report.lse_d, report.lse_c = score.offset, score.lse_d, score.lse_c
    log.info("evaluate.done", **report.as_dict())
    return report
