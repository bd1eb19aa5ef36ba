"""The device-resident frame pipeline: no pixel leaves the device between avatar and JPEG.

Per batch, on one torch device:

    gather canvases (index_select from `DeviceFrames`) -> crop/mask into the U-Net input
    (written in place) -> U-Net (`run_tensor`) -> paste-back into the canvases -> encode

On CUDA the kernels are `kernels.cuda` (CuPy, sharing torch's memory through
`__cuda_array_interface__` on torch's current stream), the U-Net input is fp16 and JPEG
encoding is nvjpeg (torchvision, batched); only the JPEG bytes come back. On the CPU device
the same steps run with `kernels.cpu` and cv2 JPEG, which is how CI proves the path: the
frames equal the host `FramePipeline`'s for the same runner. A crop-only job's 328 crop is
assembled on the host from its source frame and prediction (a debug output).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from kernels import DEFAULT_FEATHER, WINDOW, select_backend
from synctalk.render.device_frames import DeviceFrames
from synctalk.render.encode import Encoding, encode, encode_jpeg, encode_raw_rgb
from synctalk.render.pipeline import (
    FrameJob,
    RenderModel,
    StageTimes,
    crop_with_face,
    runner_groups,
)


@dataclass(frozen=True)
class EncodedFrame:
    """One rendered frame as the wire carries it."""

    data: bytes
    width: int
    height: int


@dataclass
class _Batch:
    """A rendered batch still on the device: one canvas view (HWC BGR uint8) per full-frame
    job, the host 328 crop per crop-only job."""

    canvases: dict[int, torch.Tensor]
    crops: dict[int, np.ndarray]


class ResidentPipeline:
    """FramePipeline's job interface on device-resident frames (blocking; call it from a
    thread). `render` returns host images (infer, tests); `render_encoded` returns the wire
    bytes, encoded on the device's encoder."""

    encodes = True

    def __init__(self, frames: DeviceFrames, backend: ModuleType | None = None,
                 feather: float = DEFAULT_FEATHER, encode_threads: int = 2) -> None:
        self.frames = frames
        self.device = frames.device
        self.on_gpu = self.device.type == "cuda"
        self.backend = backend or select_backend("cuda" if self.on_gpu else "cpu")
        if (self.backend.NAME == "cuda") != self.on_gpu:
            raise ValueError(f"kernels backend {self.backend.NAME!r} does not match the "
                             f"device {self.device}")
        self.feather = feather
        self.times = StageTimes()
        self._encoder = None if self.on_gpu else ThreadPoolExecutor(
            max(1, encode_threads), thread_name_prefix="resident-encode")

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ stream lifetime

    def prepare(self, model: RenderModel) -> None:
        """Upload (or pin) the avatar's frames for a stream; AvatarTooLarge when they cannot fit."""
        self.frames.acquire(model)

    def release(self, model: RenderModel) -> None:
        self.frames.release(model.key)

    # ------------------------------------------------------------------ the batch

    def render(self, jobs: Sequence[FrameJob]) -> list[np.ndarray]:
        """BGR uint8 host images, one per job: the full frame, or the 328 crop."""
        if not jobs:
            return []
        batch = self._run(jobs)
        out = [batch.crops[i] if i in batch.crops else batch.canvases[i].cpu().numpy()
               for i in range(len(jobs))]
        self._count(jobs)
        return out

    def render_encoded(self, jobs: Sequence[FrameJob]) -> list[EncodedFrame]:
        """Each job's frame in its encoding and quality; only these bytes leave the device."""
        if not jobs:
            return []
        batch = self._run(jobs)
        t = self.times.now()
        out = self._encode(jobs, batch)
        self.times.add("encode", t)
        self._count(jobs)
        return out

    def _count(self, jobs: Sequence[FrameJob]) -> None:
        self.times.frames += len(jobs)
        self.times.batches += 1

    def _run(self, jobs: Sequence[FrameJob]) -> _Batch:
        t = self.times.now()
        with torch.inference_mode(), self._stream():
            sources: dict[Any, torch.Tensor] = {}
            for job in jobs:
                if job.model.key not in sources:
                    sources[job.model.key] = self.frames.get(job.model)
            views = [sources[job.model.key][job.source] for job in jobs]
            boxes = np.stack([job.model.boxes[job.source] for job in jobs]).astype(np.int64)
            canvases = self._gather(jobs, sources)
            t = self._mark("frames", t)
            x = self._crop(views, boxes)
            t = self._mark("crop", t)
            pred = self._unet(jobs, x)
            t = self._mark("unet", t)
            full = sorted(canvases)
            if full:
                self._paste([canvases[i] for i in full], boxes[full], pred[full])
            crops = {i: crop_with_face(views[i].cpu().numpy(), boxes[i],
                                       pred[i].float().cpu().numpy())
                     for i, job in enumerate(jobs) if job.crop_only}
            self._mark("paste", t)
        return _Batch(canvases, crops)

    def _mark(self, stage: str, since: tuple[float, float]) -> tuple[float, float]:
        """End a stage; on CUDA wait for its kernels first, so stage times are true (a few
        tens of microseconds per batch)."""
        if self.on_gpu:
            torch.cuda.synchronize(self.device)
        return self.times.add(stage, since)

    @contextlib.contextmanager
    def _stream(self) -> Iterator[None]:
        """CuPy launches on torch's current stream, so kernels and the U-Net stay ordered."""
        if not self.on_gpu:
            yield
            return
        import cupy

        with cupy.cuda.ExternalStream(torch.cuda.current_stream(self.device).cuda_stream):
            yield

    def _gather(self, jobs: Sequence[FrameJob], sources: dict[Any, torch.Tensor]
                ) -> dict[int, torch.Tensor]:
        """A fresh copy of each full-frame job's source frame (one index_select per avatar)."""
        groups: dict[Any, list[int]] = {}
        for i, job in enumerate(jobs):
            if not job.crop_only:
                groups.setdefault(job.model.key, []).append(i)
        canvases: dict[int, torch.Tensor] = {}
        for key, rows in groups.items():
            idx = torch.tensor([jobs[i].source for i in rows], dtype=torch.long,
                               device=self.device)
            gathered = sources[key].index_select(0, idx)
            for k, i in enumerate(rows):
                canvases[i] = gathered[k]
        return canvases

    def _crop(self, views: list[torch.Tensor], boxes: np.ndarray) -> torch.Tensor:
        """The U-Net input [B,6,320,320], written in place: fp16 on CUDA, fp32 on the CPU."""
        dtype = torch.float16 if self.on_gpu else torch.float32
        x = torch.empty((len(views), 6, WINDOW, WINDOW), dtype=dtype, device=self.device)
        if self.on_gpu:
            self.backend.crop_mask(views, boxes, out=x, dtype=np.float16)
        else:
            self.backend.crop_mask([v.numpy() for v in views], boxes, out=x.numpy())
        return x

    def _unet(self, jobs: Sequence[FrameJob], x: torch.Tensor) -> torch.Tensor:
        """Predictions [B,3,320,320] on the device; each runner sees only its own rows."""
        groups = runner_groups(jobs)
        if len(groups) == 1:
            return self._run_unet(jobs[0].model.runner, x, [job.audio for job in jobs])
        parts = {}
        for rows in groups:
            parts[tuple(rows)] = self._run_unet(jobs[rows[0]].model.runner, x[rows],
                                                [jobs[i].audio for i in rows])
        first = next(iter(parts.values()))
        pred = torch.empty((len(jobs), *first.shape[1:]), dtype=first.dtype, device=self.device)
        for rows, part in parts.items():
            pred[list(rows)] = part.to(first.dtype)
        return pred

    def _run_unet(self, runner: Any, x: torch.Tensor, audio: list[np.ndarray]) -> torch.Tensor:
        a = torch.from_numpy(np.stack(audio).astype(np.float32, copy=False))
        if hasattr(runner, "run_tensor"):
            y = runner.run_tensor(x, a.to(self.device, non_blocking=True))
            return y.to(self.device).contiguous()  # a no-op unless the runner is elsewhere
        # A host runner (ONNX Runtime): on the CPU device these are views, not copies.
        y = runner(x.float().cpu().numpy(), a.numpy())
        return torch.from_numpy(np.ascontiguousarray(y, np.float32)).to(self.device)

    def _paste(self, canvases: list[torch.Tensor], boxes: np.ndarray, pred: torch.Tensor) -> None:
        if self.on_gpu:
            if pred.dtype not in (torch.float16, torch.float32):
                pred = pred.to(torch.float16)
            self.backend.paste_back(canvases, boxes, pred.contiguous(), feather=self.feather)
        else:
            self.backend.paste_back([c.numpy() for c in canvases], boxes,
                                    pred.float().numpy(), feather=self.feather)

    # ------------------------------------------------------------------ encoding

    def _encode(self, jobs: Sequence[FrameJob], batch: _Batch) -> list[EncodedFrame]:
        out: list[EncodedFrame | None] = [None] * len(jobs)
        for i, crop in batch.crops.items():
            out[i] = EncodedFrame(encode(crop, jobs[i].encoding, jobs[i].quality),
                                  crop.shape[1], crop.shape[0])
        jpeg: dict[int, list[int]] = {}
        for i, canvas in batch.canvases.items():
            if jobs[i].encoding is Encoding.JPEG:
                jpeg.setdefault(jobs[i].quality, []).append(i)
            else:
                out[i] = EncodedFrame(encode_raw_rgb(canvas.cpu().numpy()),
                                      canvas.shape[1], canvas.shape[0])
        for quality, rows in jpeg.items():
            images = [batch.canvases[i] for i in rows]
            for i, image, data in zip(rows, images, self._jpeg(images, quality), strict=True):
                out[i] = EncodedFrame(data, image.shape[1], image.shape[0])
        done = [frame for frame in out if frame is not None]
        if len(done) != len(jobs):
            raise RuntimeError(f"encoded {len(done)} of {len(jobs)} frames")
        return done

    def _jpeg(self, images: list[torch.Tensor], quality: int) -> list[bytes]:
        """Baseline JPEG of BGR HWC canvases: nvjpeg (batched) on CUDA, cv2 threads on the CPU."""
        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg_quality: expected 1..100, got {quality}")
        if self.on_gpu:
            from torchvision.io import encode_jpeg as nvjpeg  # CUDA images only: lazy import

            rgb = [img.permute(2, 0, 1).flip(0).contiguous() for img in images]
            return [t.cpu().numpy().tobytes() for t in nvjpeg(rgb, quality=quality)]
        assert self._encoder is not None
        return list(self._encoder.map(lambda img: encode_jpeg(img.numpy(), quality), images))
