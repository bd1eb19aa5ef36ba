"""The renderer's Prometheus metrics, on prometheus_client's default REGISTRY.

Defined once per process at import (several renderers may share a test process); the GPU
gauges are created on first use, on CUDA only, so a CPU renderer does not export them.
"""

from __future__ import annotations

import time
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from synctalk.log import get_logger

log = get_logger("services.renderer.metrics")

BATCH_SIZE = Histogram(
    "synctalk_renderer_batch_size", "Frames per U-Net batch (all streams of the replica).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 96, 128, 256))
QUEUE_WAIT = Histogram(
    "synctalk_renderer_queue_wait_seconds", "A frame's wait from being queued to its batch start.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56))
FRAMES = Counter("synctalk_renderer_frames_total", "Frames rendered.", ["avatar"])
STAGE_SECONDS = Histogram(
    "synctalk_renderer_stage_seconds", "Seconds a batch spends in each pipeline stage.",
    ["stage"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
IDLE_LOOP_FRAMES = Counter(
    "synctalk_renderer_idle_loop_frames_total",
    "Idle-loop frames sent: drawn by the U-Net once per avatar, then served from the cache.",
    ["avatar", "served"])
ACTIVE_STREAMS = Gauge("synctalk_renderer_active_streams", "Render calls in progress.")
RESIDENT_AVATAR_BYTES = Gauge(
    "synctalk_renderer_resident_avatar_bytes", "Bytes of avatar frames resident on the device.")


@cache
def _gpu_gauges() -> tuple[Gauge, Gauge]:
    return (Gauge("synctalk_renderer_gpu_memory_bytes", "GPU memory allocated by torch."),
            Gauge("synctalk_renderer_gpu_utilization_ratio", "GPU utilisation, 0 to 1."))


def observe_batch(size: int, queue_waits: list[float]) -> None:
    BATCH_SIZE.observe(size)
    for wait in queue_waits:
        QUEUE_WAIT.observe(wait)


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage=stage).observe(seconds)


def count_frames(avatar: str, n: int) -> None:
    FRAMES.labels(avatar=avatar).inc(n)


GPU_POLL_S = 1.0  # NVML queries are not free: at most once a second
_last_poll = [0.0]


def update_gpu(device: object) -> None:
    """GPU memory and utilisation after a batch (CUDA only; utilisation needs NVML)."""
    import torch

    now = time.monotonic()
    if now - _last_poll[0] < GPU_POLL_S:
        return
    _last_poll[0] = now
    memory, utilisation = _gpu_gauges()
    memory.set(torch.cuda.memory_allocated(device))  # type: ignore[arg-type]
    try:
        utilisation.set(torch.cuda.utilization(device) / 100.0)  # type: ignore[arg-type]
    except Exception:  # no pynvml / NVML in the image: memory only
        pass
