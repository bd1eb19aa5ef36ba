"""Avatar preparation: a user's video -> an avatar folder (SyncTalk_2D's data_utils/process.py).

Steps, each skipped when its output is already there, so an interrupted run resumes:

1. probe      the file has a video and an audio stream and lasts at least the minimum
2. frames     25 fps, nearest source frame per output frame -> frames/NNNNNN.jpg
3. audio      16 kHz mono s16, aligned to the first video frame, exactly N x 640 samples
4. landmarks  HOG face + 68 points per frame (raw results kept in .prepare/ while running)
5. check      too many frames without a face, or with several, fails with their ranges
6. boxes      the crop rule on the landmarks, smoothed over time -> boxes.npy
7. avatar.json with "complete": true, written last and atomically

Bad input raises PrepareError (a ValueError) with a message meant for the user; nothing is
marked complete then. Audio features are not made here: `training.pipeline.ensure_features`
extracts them for the configured mode (`synctalk prepare` calls it after this).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf
from tqdm import tqdm

from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME
from synctalk.avatar.boxes import crop_boxes, fill_missing, frame_ranges
from synctalk.avatar.frames import JpegFrames
from synctalk.avatar.landmarks import NUM_POINTS, FaceResult, Landmarker, build_landmarker
from synctalk.avatar.layout import (
    AUDIO_FILE,
    BOXES_FILE,
    FEATURES_FILE,
    FPS,
    FRAMES_DIR,
    LANDMARKS_FILE,
    META_FILE,
    PREPARE_STATE_DIR,
    AvatarMeta,
    frame_name,
    is_complete,
    read_meta,
    valid_avatar_name,
    write_meta,
)
from synctalk.avatar.video import VideoError, VideoInfo, frames_at_25fps, probe
from synctalk.config import REPO_ROOT, Settings
from synctalk.log import get_logger

log = get_logger("synctalk.avatar.prepare")

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
JPEG_QUALITY = 95
CHECKPOINT_EVERY = 250  # frames between saves of the landmark progress


class PrepareError(ValueError):
    """The input cannot become an avatar; the message says why, for the user."""


@dataclass(frozen=True)
class PrepareOptions:
    """The `models` settings preparation reads (their defaults live in synctalk.config)."""

    min_seconds: float
    max_bad_face_share: float  # frames with no face or several faces
    landmark_model: str  # empty = dlib's 68-point predictor
    jpeg_quality: int = JPEG_QUALITY

    @classmethod
    def from_settings(cls, settings: Settings) -> PrepareOptions:
        models = settings.models
        return cls(min_seconds=models.min_video_seconds,
                   max_bad_face_share=models.max_bad_face_share,
                   landmark_model=models.landmark_model)


def find_source_video(avatar_dir: Path) -> Path | None:
    """The video an avatar is made from when none is given: the one an interrupted run used,
    `<avatar>/<name>.mp4`, or SyncTalk_2D's `dataset/<name>/<name>.mp4` (from the working
    directory, then from the repository)."""
    avatar_dir = Path(avatar_dir)
    recorded = _read_state(avatar_dir).get("source")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    name = avatar_dir.name
    for folder in (avatar_dir, Path.cwd() / "dataset" / name, REPO_ROOT / "dataset" / name):
        for ext in VIDEO_EXTENSIONS:
            if (candidate := folder / f"{name}{ext}").is_file():
                return candidate
    return None


def _state_path(avatar_dir: Path) -> Path:
    return avatar_dir / PREPARE_STATE_DIR / "state.json"


def _read_state(avatar_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(avatar_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _source_signature(video: Path) -> dict[str, Any]:
    st = video.stat()
    return {"source": str(video.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _reset(avatar_dir: Path) -> None:
    """Remove everything a previous preparation wrote, and the audio features made from its
    audio. Trained checkpoints are left alone (they cost hours; retrain to replace them)."""
    for name in (META_FILE, LANDMARKS_FILE, BOXES_FILE, AUDIO_FILE):
        (avatar_dir / name).unlink(missing_ok=True)
    for features in avatar_dir.glob(FEATURES_FILE.format(mode="*")) if avatar_dir.is_dir() else []:
        features.unlink(missing_ok=True)
    for name in (FRAMES_DIR, PREPARE_STATE_DIR):
        shutil.rmtree(avatar_dir / name, ignore_errors=True)


def prepare_avatar(avatar_dir: Path, settings: Settings, video: Path | None = None, *,
                   force: bool = False, progress: bool = True,
                   landmarker: Landmarker | None = None) -> None:
    """Make `avatar_dir` a complete avatar from `video` (default: find_source_video).

    A complete avatar is left alone unless `force`; a different `video` than the one it was
    made from is an error then. `landmarker` replaces the configured detector (tests)."""
    avatar_dir = Path(avatar_dir)
    options = PrepareOptions.from_settings(settings)
    if not valid_avatar_name(avatar_dir.name):
        raise PrepareError(f"invalid avatar folder name {avatar_dir.name!r}: use letters, digits, "
                           f"'_', '-', '.' (not first), at most 64 characters")
    if video is None:
        video = find_source_video(avatar_dir)
        if video is None:
            raise PrepareError(f"no source video for {avatar_dir.name!r}: put it at "
                               f"dataset/{avatar_dir.name}/{avatar_dir.name}.mp4 or pass --video")
    video = Path(video)
    if not video.is_file():
        raise PrepareError(f"{video}: no such file")
    if is_complete(avatar_dir) and not force:
        recorded = read_meta(avatar_dir).extra.get("source")
        if recorded and Path(recorded).resolve() != video.resolve():
            raise PrepareError(f"{avatar_dir} was prepared from {recorded}, not {video}; "
                               f"pass --force to prepare it again")
        log.info("step_skipped", step="prepare", avatar=str(avatar_dir), reason="complete")
        return
    try:
        info = probe(video)
    except VideoError as exc:
        raise PrepareError(str(exc)) from exc
    except OSError as exc:
        raise PrepareError(f"{video}: cannot read the file ({exc})") from exc
    if not info.has_audio:
        raise PrepareError(f"{video}: no audio track (the avatar learns from the voice in the video)")
    if info.duration and info.duration < options.min_seconds:
        raise PrepareError(f"{video}: {info.duration:.2f} s is shorter than the minimum "
                           f"{options.min_seconds:g} s")

    signature = _source_signature(video)
    state = _read_state(avatar_dir)
    if force or (state and {k: state.get(k) for k in signature} != signature):
        _reset(avatar_dir)
    elif not state and (avatar_dir / META_FILE).exists():
        _reset(avatar_dir)  # an avatar.json without state: left by something else; start over
    (avatar_dir / PREPARE_STATE_DIR).mkdir(parents=True, exist_ok=True)
    _write_json(_state_path(avatar_dir), signature)
    log.info("prepare_started", avatar=str(avatar_dir), video=str(video), width=info.width,
             height=info.height, source_fps=round(info.source_fps, 3), seconds=round(info.duration, 2))

    audio = None if (avatar_dir / AUDIO_FILE).is_file() else _load_audio(video, info)
    num_frames, width, height = _frames_step(avatar_dir, video, options, progress)
    if num_frames < options.min_seconds * FPS:
        raise PrepareError(f"{video}: {num_frames / FPS:.2f} s of video is shorter than the "
                           f"minimum {options.min_seconds:g} s")
    if audio is not None:
        _write_audio(avatar_dir, audio, num_frames)
    else:
        log.info("step_skipped", step="audio")
    landmarks, counts = _landmarks_step(avatar_dir, num_frames, options, progress, landmarker)
    _check_faces(video, counts, options)
    _boxes_step(avatar_dir, landmarks, counts)

    extra = {
        "source": str(video.resolve()),
        "source_fps": round(info.source_fps, 3),
        "sample_rate": SAMPLE_RATE,
        "audio": AUDIO_FILE,
        "landmarks": landmarker.name if landmarker else _detector_name(options),
        "frames_without_face": int((counts == 0).sum()),
        "frames_with_several_faces": int((counts > 1).sum()),
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    meta = AvatarMeta(name=avatar_dir.name, width=width, height=height, num_frames=num_frames,
                      fps=FPS, frames=FRAMES_DIR, complete=True, extra=extra)
    write_meta(avatar_dir, meta)
    shutil.rmtree(avatar_dir / PREPARE_STATE_DIR, ignore_errors=True)
    log.info("prepare_done", avatar=str(avatar_dir), frames=num_frames,
             frames_without_face=extra["frames_without_face"],
             frames_with_several_faces=extra["frames_with_several_faces"])


def _detector_name(options: PrepareOptions) -> str:
    return f"onnx:{Path(options.landmark_model).name}" if options.landmark_model else "dlib-68"


def _load_audio(video: Path, info: VideoInfo) -> np.ndarray:
    """16 kHz mono float, shifted so sample 0 plays with the first video frame."""
    from synctalk.audio.decode import AudioDecodeError, load_audio

    try:
        audio = load_audio(video)
    except AudioDecodeError as exc:
        raise PrepareError(f"{video}: the audio track cannot be decoded ({exc})") from exc
    shift = round(info.audio_offset * SAMPLE_RATE)
    if shift > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio])
    elif shift < 0:
        audio = audio[-shift:]
    return audio


def _write_audio(avatar_dir: Path, audio: np.ndarray, num_frames: int) -> None:
    """audio.wav of exactly num_frames x 640 samples (cut or padded with silence)."""
    total = num_frames * SAMPLES_PER_FRAME
    fitted = np.zeros(total, np.float32)
    fitted[: min(total, audio.size)] = audio[:total]
    path = avatar_dir / AUDIO_FILE
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.wav")
    sf.write(tmp, fitted, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    log.info("step_done", step="audio", path=str(path), seconds=round(total / SAMPLE_RATE, 2),
             source_seconds=round(audio.size / SAMPLE_RATE, 2))


def _frames_step(avatar_dir: Path, video: Path, options: PrepareOptions,
                 progress: bool) -> tuple[int, int, int]:
    """Write frames/NNNNNN.jpg; frames an interrupted run already wrote are kept."""
    marker = avatar_dir / PREPARE_STATE_DIR / "frames.json"
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        log.info("step_skipped", step="frames", frames=done["num_frames"])
        return int(done["num_frames"]), int(done["width"]), int(done["height"])
    folder = avatar_dir / FRAMES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    existing = {p.name for p in folder.iterdir()}
    params = [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality]
    num_frames = width = height = 0
    bar = tqdm(desc="frames", unit="frame", disable=not progress, file=sys.stderr)
    try:
        for i, image in frames_at_25fps(video, FPS):
            name = frame_name(i)
            if name not in existing:
                tmp = folder / f".{name}.tmp.jpg"
                if not cv2.imwrite(str(tmp), image, params):
                    raise PrepareError(f"cannot write {folder / name}")
                os.replace(tmp, folder / name)
            num_frames, height, width = i + 1, image.shape[0], image.shape[1]
            bar.update(1)
    except VideoError as exc:
        raise PrepareError(str(exc)) from exc
    finally:
        bar.close()
    if num_frames == 0:
        raise PrepareError(f"{video}: the video stream holds no frames")
    for name in existing:  # frames past the end, left by an earlier run of a longer video
        stem = name.removesuffix(".jpg")
        if stem.isdigit() and int(stem) >= num_frames:
            (folder / name).unlink(missing_ok=True)
    _write_json(marker, {"num_frames": num_frames, "width": width, "height": height})
    log.info("step_done", step="frames", frames=num_frames, width=width, height=height)
    return num_frames, width, height


def _pick_face(result: FaceResult, previous: np.ndarray | None) -> int:
    """Index of the face to follow: nearest to the previous frame's face, else the most confident."""
    if result.count == 1 or previous is None:
        return 0
    distance = np.linalg.norm(result.landmarks.mean(axis=1) - previous.mean(axis=0), axis=1)
    return int(np.argmin(distance))


def _landmarks_step(avatar_dir: Path, num_frames: int, options: PrepareOptions, progress: bool,
                    landmarker: Landmarker | None) -> tuple[np.ndarray, np.ndarray]:
    """Raw landmarks [N,68,2] (zeros where no face) and face counts [N]; resumable."""
    partial = avatar_dir / PREPARE_STATE_DIR / "landmarks.npz"
    landmarks = np.zeros((num_frames, NUM_POINTS, 2), np.float32)
    counts = np.full(num_frames, -1, np.int32)
    done = 0
    face_px = float("nan")
    if partial.is_file():
        with np.load(partial) as data:
            done = min(int(data["done"]), num_frames)
            landmarks[:done] = data["landmarks"][:done]
            counts[:done] = data["counts"][:done]
            face_px = float(data["face_px"])
    if done == num_frames:
        log.info("step_skipped", step="landmarks", frames=num_frames)
        return landmarks, counts
    detect = landmarker or build_landmarker(options.landmark_model or None)
    tracker = getattr(detect, "detect", None)
    if tracker is not None and hasattr(tracker, "face_px") and np.isfinite(face_px):
        tracker.face_px = face_px
    frames = JpegFrames(avatar_dir / FRAMES_DIR, num_frames, cache_frames=0)
    limit = options.max_bad_face_share * num_frames
    previous = landmarks[done - 1] if done and counts[done - 1] > 0 else None

    def save(upto: int) -> None:
        tracked = getattr(tracker, "face_px", None)
        tmp = partial.with_name(f".landmarks.tmp{os.getpid()}.npz")
        np.savez(tmp, done=upto, landmarks=landmarks[:upto], counts=counts[:upto],
                 face_px=float("nan") if tracked is None else float(tracked))
        os.replace(tmp, partial)

    bar = tqdm(total=num_frames, initial=done, desc="landmarks", unit="frame",
               disable=not progress, file=sys.stderr)
    upto = done
    try:
        for i in range(done, num_frames):
            result = detect(np.asarray(frames[i]))
            counts[i] = result.count
            if result.count:
                landmarks[i] = result.landmarks[_pick_face(result, previous)]
                previous = landmarks[i]
            upto = i + 1
            bar.update(1)
            if upto % CHECKPOINT_EVERY == 0:
                save(upto)
            if (counts[:upto] != 1).sum() > limit:
                break  # fails the face check whatever the remaining frames hold
    finally:
        bar.close()
        if upto > done:
            save(upto)  # also when interrupted: the next run resumes from here
    return landmarks, counts


def _check_faces(video: Path, counts: np.ndarray, options: PrepareOptions) -> None:
    """Fail when frames with no face or several faces are more than the allowed share."""
    seen = counts >= 0
    missing = np.flatnonzero(seen & (counts == 0))
    several = np.flatnonzero(counts > 1)
    total = len(counts)
    bad = len(missing) + len(several)
    if bad <= options.max_bad_face_share * total and len(missing) < total:
        if bad:
            log.warning("face_check", frames_without_face=frame_ranges(missing),
                        frames_with_several_faces=frame_ranges(several))
        return
    parts = []
    if len(missing):
        parts.append(f"no face in {len(missing)} frames ({frame_ranges(missing)})")
    if len(several):
        parts.append(f"more than one face in {len(several)} frames ({frame_ranges(several)})")
    checked = int(seen.sum())
    scope = "" if checked == total else f" (stopped after {checked} of {total} frames)"
    raise PrepareError(f"{video}: {'; '.join(parts)}; at most {options.max_bad_face_share:.0%} of "
                       f"the {total} frames may lack a single clear face{scope}. Record one person "
                       f"facing the camera.")


def _boxes_step(avatar_dir: Path, landmarks: np.ndarray, counts: np.ndarray) -> None:
    if (avatar_dir / BOXES_FILE).is_file() and (avatar_dir / LANDMARKS_FILE).is_file():
        log.info("step_skipped", step="boxes")
        return
    filled = fill_missing(landmarks, counts > 0)
    _save_npy(avatar_dir / LANDMARKS_FILE, filled.astype(np.float32))
    boxes = crop_boxes(filled)
    _save_npy(avatar_dir / BOXES_FILE, boxes)
    side = boxes[:, 2] - boxes[:, 0]
    log.info("step_done", step="boxes", frames=len(boxes), side_min=int(side.min()),
             side_max=int(side.max()))
