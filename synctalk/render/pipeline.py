"""The frame pipeline shared by the Renderer service and `synctalk infer`.

Per output frame i: the source frame is the ping-pong walk's i-th step from the start frame;
its box is cropped to the U-Net input (reference window + masked window, `kernels.crop_mask`),
the U-Net draws the mouth for the frame's audio window, and the result is blended back into
a copy of the full frame with a feathered edge (`kernels.paste_back`), or returned as the
328x328 crop. Work runs in batches; one batch may mix streams and avatars (frames of any size
share a crop/paste call, and each U-Net sees only the rows of its own avatar).

`kernels.select_backend()` decides where crop and paste run: the CUDA twins when a GPU
really works, the OpenCV path otherwise. This is the host path: the U-Net runner takes and
returns host arrays (`synctalk.models.runners.UNetRunner`), so with CUDA kernels crops are
downloaded and predictions uploaded once per batch. The Renderer service on a GPU uses
`synctalk.render.resident.ResidentPipeline` instead (same jobs, no host copies).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from kernels import DEFAULT_FEATHER, RING, WINDOW, select_backend
from kernels.cpu import resized_crop
from synctalk.config import ModelsConfig, RendererConfig
from synctalk.render.encode import DEFAULT_JPEG_QUALITY, Encoding
from synctalk.render.idle import IdleRule

# Decoded source frames kept per process (1080p BGR is 6.2 MB a frame).
FRAME_CACHE_BYTES = RendererConfig.model_fields["frame_cache_mb"].default * 1024**2

STAGES = ("frames", "crop", "unet", "paste")
# Stage names as the renderer's metrics report them (synctalk_renderer_stage_seconds).
METRIC_STAGES = {"frames": "gather", "crop": "crop", "unet": "unet", "paste": "paste",
                 "encode": "encode"}


class FrameCache:
    """An LRU of decoded source frames across avatars, bounded in bytes, thread-safe.

    JPEG-decoding a 1080p source frame costs about as much as pasting it, and the ping-pong
    walk revisits every frame, so decoded frames are kept; entries are read-only.
    """

    def __init__(self, max_bytes: int = FRAME_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[Any, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, int], load: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            frame = self._entries.get(key)
            if frame is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return frame
        frame = np.array(load(), dtype=np.uint8, copy=True, order="C")
        frame.flags.writeable = False
        with self._lock:
            self.misses += 1
            if key not in self._entries and frame.nbytes <= self.max_bytes:
                self._entries[key] = frame
                self.bytes += frame.nbytes
                while self.bytes > self.max_bytes:
                    _, old = self._entries.popitem(last=False)
                    self.bytes -= old.nbytes
        return frame

    def drop(self, owner: Any) -> None:
        """Forget every frame of one avatar (evicted or reloaded)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == owner]:
                self.bytes -= self._entries.pop(key).nbytes


@dataclass(eq=False)
class RenderModel:
    """One avatar bound to its U-Net for one feature mode: what a stream renders with."""

    avatar: Any  # synctalk.avatar.Avatar
    mode: str
    runner: Callable[[np.ndarray, np.ndarray], np.ndarray]  # UNetRunner
    boxes: np.ndarray  # [N, 4] x0, y0, x1, y1 (exclusive)
    cache: FrameCache
    key: Any = None  # identifies the avatar's frames in the cache

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = (str(self.avatar.path), id(self))

    @property
    def num_frames(self) -> int:
        return int(self.avatar.num_frames)

    def frame(self, i: int) -> np.ndarray:
        """Source frame i, BGR uint8, read-only (decoded once, then cached)."""
        return self.cache.get((self.key, i), lambda: self.avatar.frames[i])


def load_render_model(avatar: Any, mode: str, models: ModelsConfig,
                      cache: FrameCache | None = None) -> RenderModel:
    """The avatar's U-Net for `mode` as a runner (torch or ONNX Runtime per `models`).

    FileNotFoundError when the avatar has no checkpoint for `mode`."""
    from synctalk.models.runner_factory import build_unet_runner

    if mode not in avatar.feature_modes():
        have = ", ".join(avatar.feature_modes()) or "none"
        raise FileNotFoundError(
            f"avatar {avatar.name!r} has no U-Net for feature mode {mode!r} (trained: {have})")
    runner = build_unet_runner(avatar.unet_checkpoint(mode), models)
    boxes = np.asarray(avatar.boxes)
    return RenderModel(avatar, mode, runner, boxes, cache or FrameCache())


@dataclass(frozen=True, eq=False)
class FrameJob:
    """One output frame to draw: the source frame and the audio window that drives it."""

    model: RenderModel
    source: int
    audio: np.ndarray
    crop_only: bool = False
    encoding: Encoding = Encoding.JPEG  # for pipelines that encode on the device
    quality: int = DEFAULT_JPEG_QUALITY


def runner_groups(jobs: Sequence[FrameJob]) -> list[list[int]]:
    """The jobs' indices grouped by U-Net runner, each group in job order: a batch may mix
    avatars and modes, and a runner must see only its own rows."""
    groups: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(id(job.model.runner), []).append(i)
    return list(groups.values())


@dataclass
class StageTimes:
    """Wall and process-CPU seconds spent per stage (all batches), for the benchmark: on a
    shared machine the CPU time says what a stage costs, the wall time what it took."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0
    batches: int = 0
    # Called with (metric stage name, seconds) for every stage of every batch (metrics).
    observer: Callable[[str, float], None] | None = None

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def add(self, stage: str, since: tuple[float, float]) -> tuple[float, float]:
        now = self.now()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now[0] - since[0]
        self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + now[1] - since[1]
        if self.observer is not None:
            self.observer(METRIC_STAGES.get(stage, stage), now[0] - since[0])
        return now

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.cpu_seconds = dict.fromkeys(STAGES, 0.0)
        self.frames = self.batches = 0


class FramePipeline:
    """Crop -> U-Net -> paste for a batch of frame jobs (blocking; call it from a thread)."""

    def __init__(self, backend: ModuleType | None = None,
                 feather: float = DEFAULT_FEATHER) -> None:
        self.backend = backend or select_backend()
        self.on_gpu = self.backend.NAME == "cuda"
        self.feather = feather
        self.times = StageTimes()

    def render(self, jobs: Sequence[FrameJob]) -> list[np.ndarray]:
        """BGR uint8 images, one per job in order: the full frame, or the 328 crop."""
        if not jobs:
            return []
        t = self.times.now()
        frames = [job.model.frame(job.source) for job in jobs]
        boxes = np.stack([job.model.boxes[job.source] for job in jobs]).astype(np.int64)
        t = self.times.add("frames", t)
        if self.on_gpu:
            out = self._render_gpu(jobs, frames, boxes, t)
        else:
            out = self._render_cpu(jobs, frames, boxes, t)
        self.times.frames += len(jobs)
        self.times.batches += 1
        return out

    def _unet(self, jobs: Sequence[FrameJob], crops: np.ndarray) -> np.ndarray:
        """Predictions [B,3,320,320]; each runner sees only its own rows, in job order."""
        groups = runner_groups(jobs)
        if len(groups) == 1:
            audio = np.stack([job.audio for job in jobs]).astype(np.float32, copy=False)
            return np.asarray(jobs[0].model.runner(crops, audio), np.float32)
        pred = np.empty((len(jobs), 3, WINDOW, WINDOW), np.float32)
        for rows in groups:
            audio = np.stack([jobs[i].audio for i in rows]).astype(np.float32, copy=False)
            pred[rows] = jobs[rows[0]].model.runner(np.ascontiguousarray(crops[rows]), audio)
        return pred

    def _render_cpu(self, jobs: Sequence[FrameJob], frames: list[np.ndarray],
                    boxes: np.ndarray, t: tuple[float, float]) -> list[np.ndarray]:
        crops = self.backend.crop_mask(frames, boxes)
        t = self.times.add("crop", t)
        pred = self._unet(jobs, crops)
        t = self.times.add("unet", t)
        out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(jobs)
        full = [i for i, job in enumerate(jobs) if not job.crop_only]
        if full:
            canvases = [frames[i].copy() for i in full]
            self.backend.paste_back(canvases, boxes[full], pred[full], feather=self.feather)
            for i, canvas in zip(full, canvases, strict=True):
                out[i] = canvas
        for i, job in enumerate(jobs):
            if job.crop_only:
                out[i] = crop_with_face(frames[i], boxes[i], pred[i])
        self.times.add("paste", t)
        return out

    def _render_gpu(self, jobs: Sequence[FrameJob], frames: list[np.ndarray],
                    boxes: np.ndarray, t: tuple[float, float]) -> list[np.ndarray]:
        import cupy

        device = [cupy.asarray(f) for f in frames]  # the upload is the copy we paste into
        crops = self.backend.crop_mask(device, boxes).get()
        t = self.times.add("crop", t)
        pred = self._unet(jobs, crops)
        t = self.times.add("unet", t)
        full = [i for i, job in enumerate(jobs) if not job.crop_only]
        out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(jobs)
        if full:
            self.backend.paste_back([device[i] for i in full], boxes[full],
                                    cupy.asarray(pred[full]), feather=self.feather)
            for i in full:
                out[i] = device[i].get()
        for i, job in enumerate(jobs):
            if job.crop_only:
                out[i] = crop_with_face(frames[i], boxes[i], pred[i])
        self.times.add("paste", t)
        return out


def crop_with_face(frame: np.ndarray, box: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The 328x328 crop of the box with the predicted 320 window in it (the U-Net's view)."""
    crop = resized_crop(frame, box).copy()
    face = np.clip(np.rint(pred.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    crop[RING : RING + WINDOW, RING : RING + WINDOW] = face
    return crop


class StreamPlan:
    """One stream's bookkeeping, identical for the service and `infer`: the ping-pong walk
    from the start frame and the silence rule. Call `job` once per frame, in index order."""

    def __init__(self, model: RenderModel, start_frame: int = 0,
                 silence: np.ndarray | None = None, crop_only: bool = False,
                 encoding: Encoding = Encoding.JPEG,
                 quality: int = DEFAULT_JPEG_QUALITY) -> None:
        from synctalk.avatar import PingPong

        if not 0 <= start_frame < model.num_frames:
            raise ValueError(f"start_frame: expected 0..{model.num_frames - 1}, got {start_frame}")
        self.model = model
        self.walk = PingPong(model.num_frames, start_frame)
        self.idle = IdleRule()
        self.silence = silence
        self.crop_only = crop_only
        self.encoding = encoding
        self.quality = quality

    def job(self, index: int, audio: np.ndarray, voiced: bool, rms: float) -> tuple[FrameJob, bool]:
        """(the frame's job, whether it is idle)."""
        idle = self.idle.step(voiced, rms)
        window = self.silence if idle and self.silence is not None else audio
        source = int(self.walk.index(index))
        return FrameJob(self.model, source, window, self.crop_only, self.encoding,
                        self.quality), idle


@dataclass(frozen=True)
class RenderedFrame:
    index: int
    source: int
    idle: bool
    image: np.ndarray  # BGR uint8


def render_offline(pipeline: FramePipeline, plan: StreamPlan, features: np.ndarray,
                   rms: np.ndarray, voiced: np.ndarray, batch_size: int = 8
                   ) -> Iterator[RenderedFrame]:
    """Every frame of a whole feature array, in order, `batch_size` at a time."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    for lo in range(0, len(features), batch_size):
        idx = range(lo, min(lo + batch_size, len(features)))
        planned = [plan.job(i, features[i], bool(voiced[i]), float(rms[i])) for i in idx]
        images = pipeline.render([job for job, _ in planned])
        for i, (job, idle), image in zip(idx, planned, images, strict=True):
            yield RenderedFrame(i, job.source, idle, image)
