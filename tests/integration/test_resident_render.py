"""The device-resident renderer on the CPU device (its GPU twin is in test_resident_gpu.py):
the same frames as the host path, the byte-bounded device frame store, and the Renderer
service with it on a real server; plus the batch deadline (UNAVAILABLE, health NOT_SERVING
until a batch returns) and a U-Net OOM (RESOURCE_EXHAUSTED, the next stream works)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from kernels import select_backend
from services.renderer.server import SERVICE_NAME
from synctalk.avatar import load_avatar
from synctalk.config import ModelsConfig
from synctalk.models.runners import TorchUNetRunner
from synctalk.models.unet import IMAGE_SHAPE, load_unet
from synctalk.render.device_frames import AvatarTooLarge, DeviceFrames
from synctalk.render.encode import decode_raw_rgb
from synctalk.render.pipeline import FrameJob, FramePipeline, load_render_model
from synctalk.render.resident import ResidentPipeline
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2
from tests.support.avatars import make_avatar
from tests.support.renderer import run_with_server, settings

CPU = ModelsConfig(device="cpu", warmup=False)
TORCH = ModelsConfig(device="cpu", backend="torch", warmup=False)
RAW = common_pb2.IMAGE_ENCODING_RAW_RGB
TINY_BYTES = 12 * 256 * 256 * 3


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny eager U-Nets here run far faster on one thread than with OpenMP threads
    spinning against the other processes of a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("avatars")
    make_avatar(root, "tiny")
    make_avatar(root, "wide", num_frames=6, height=200, width=300, seed=3, jpeg=True)
    return root


def windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 32, 16, 16)).astype(np.float32)


def mixed_jobs(store: Path, models: ModelsConfig) -> list[FrameJob]:
    """Two avatars of different sizes, one crop-only job; models keyed by avatar, as the
    service keys them, so both runners share one device copy of each avatar."""
    tiny = load_render_model(load_avatar(store / "tiny"), "ave", models)
    wide = load_render_model(load_avatar(store / "wide"), "ave", models)
    tiny.key, wide.key = ("tiny", 0), ("wide", 0)
    a = windows(6)
    return [FrameJob(tiny, 0, a[0]), FrameJob(wide, 2, a[1]), FrameJob(tiny, 11, a[2]),
            FrameJob(tiny, 5, a[3], crop_only=True), FrameJob(wide, 5, a[4]),
            FrameJob(tiny, 0, a[5])]


def grey_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(int) - b).max())


def test_resident_cpu_frames_equal_the_host_path(store: Path) -> None:
    jobs = mixed_jobs(store, CPU)
    host = FramePipeline(select_backend("cpu")).render(jobs)
    resident = ResidentPipeline(DeviceFrames("cpu", 64 * 2**20))
    try:
        same_runner = resident.render(jobs)
        # The torch runner's device-tensor path (the GPU's) against today's ONNX Runtime path.
        torch_jobs = mixed_jobs(store, TORCH)
        via_tensors = resident.render(torch_jobs)
        encoded = resident.render_encoded(jobs)
    finally:
        resident.close()
    assert [grey_diff(h, r) for h, r in zip(host, same_runner, strict=True)] == [0] * len(jobs)
    assert max(grey_diff(h, r) for h, r in zip(host, via_tensors, strict=True)) <= 1
    for job, image, frame in zip(jobs, host, encoded, strict=True):
        assert (frame.height, frame.width) == image.shape[:2]
        decoded = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        expected = cv2.imdecode(np.frombuffer(cv2.imencode(
            ".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, job.quality])[1], np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(decoded, expected)
    assert resident.frames.uploads == 2 and resident.frames.bytes == TINY_BYTES + 6 * 200 * 300 * 3
    assert set(resident.times.seconds) >= {"frames", "crop", "unet", "paste", "encode"}


class _Model:
    """Just what DeviceFrames reads from a RenderModel."""

    def __init__(self, name: str, frames: int, side: int = 16) -> None:
        self.key = (name, 0)
        self.avatar = type("A", (), {
            "name": name, "num_frames": frames, "height": side, "width": side,
            "frames": np.full((frames, side, side, 3), len(name), np.uint8)})()


def test_device_frames_lru_pins_budget_and_refusal() -> None:
    one = 4 * 16 * 16 * 3
    seen: list[int] = []
    store = DeviceFrames("cpu", 2 * one, on_change=seen.append)
    a, b, c = _Model("a", 4), _Model("bb", 4), _Model("ccc", 4)
    assert int(store.get(a)[0, 0, 0, 0]) == 1 and store.get(a) is store.get(a)
    store.acquire(b)
    store.get(c)  # evicts a (unpinned, oldest), never the pinned b
    assert set(store.keys()) == {b.key, c.key} and store.bytes == 2 * one == seen[-1]
    store.acquire(c)
    with pytest.raises(AvatarTooLarge, match="avatars in use hold"):
        store.get(a)  # both residents are pinned
    with pytest.raises(AvatarTooLarge, match="more than the renderer's budget"):
        store.get(_Model("huge", 9))
    store.release(c.key)
    store.get(a)
    assert set(store.keys()) == {b.key, a.key} and store.bytes == 2 * one
    store.drop(b.key)  # pinned: stays until its stream ends
    assert b.key in store
    store.release(b.key)
    assert b.key not in store and store.bytes == one == seen[-1]


def test_runner_compile_pads_to_compiled_sizes_and_falls_back_to_eager(store: Path) -> None:
    runner = TorchUNetRunner(load_unet(store / "tiny" / "checkpoints" / "unet_ave.pt"))
    x = torch.rand((1, *IMAGE_SHAPE))
    a = torch.from_numpy(windows(1))
    eager = runner.run_tensor(x, a)
    calls: list[int] = []

    def fake_compile(model: Any, dynamic: bool) -> Any:  # the real one needs a GPU to pay off
        assert dynamic is False
        return lambda image, audio: (calls.append(len(image)), model(image, audio))[1]

    assert runner.compile_for([1, 2, 0], budget_s=60, compile_fn=fake_compile) == (1, 2)
    assert calls == [2, 1]  # warmed largest first
    assert torch.allclose(runner.run_tensor(x, a), eager, atol=1e-5)
    assert torch.allclose(runner.run_tensor(torch.cat([x] * 3), torch.cat([a] * 3))[1:2], eager,
                          atol=1e-5)  # 3 frames: no compiled size holds them, eager
    assert calls == [2, 1, 1]

    def broken(model: Any, dynamic: bool) -> Any:
        raise RuntimeError("no compiler here")

    assert runner.compile_for([1, 2], 60, compile_fn=broken) == ()
    assert runner.compiled_sizes == () and torch.allclose(runner.run_tensor(x, a), eager)
    assert runner.compile_for([1, 2], budget_s=-1.0, compile_fn=fake_compile) == ()
    assert calls == [2, 1, 1]  # the budget was spent before the first size
    assert runner.compile_for([2], budget_s=60, compile_fn=fake_compile) == (2,)
    assert torch.allclose(runner.run_tensor(x, a), eager, atol=1e-5)
    assert calls == [2, 1, 1, 2, 2]  # 1 frame padded up to 2 (at most twice the work)


# ---------------------------------------------------------------- the service


async def render(stub: Any, n: int, avatar: str = "tiny", **options: Any) -> list[Any]:
    audio = windows(n, seed=9)

    async def requests():
        yield renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=avatar, **options))
        for i in range(n):
            yield renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(
                index=i, pts_ms=40 * i, mode="ave", rms=0.1, voiced=True,
                features=common_pb2.Tensor(data=audio[i].tobytes(), shape=[32, 16, 16],
                                           dtype=common_pb2.DTYPE_FLOAT32)))

    return [f async for f in stub.Render(requests(), timeout=60)]


async def health_status(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    return reply.status


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_resident_service_matches_the_host_service_and_refuses_what_cannot_fit(
        store: Path) -> None:
    async def frames(stub, channel, servicer) -> list[np.ndarray]:
        got = await render(stub, 10, encoding=RAW)
        return [decode_raw_rgb(f.data, f.width, f.height) for f in got], servicer

    host, host_servicer = run_with_server(frames, settings(store))
    before = sample("synctalk_renderer_frames_total", avatar="tiny")
    resident, servicer = run_with_server(frames, settings(store, resident="on"))
    assert not host_servicer.resident and servicer.resident
    assert max(grey_diff(h, r) for h, r in zip(host, resident, strict=True)) <= 1
    assert sample("synctalk_renderer_frames_total", avatar="tiny") == before + 10
    assert sample("synctalk_renderer_stage_seconds_count", stage="encode") > 0
    assert sample("synctalk_renderer_resident_avatar_bytes") == TINY_BYTES
    assert sample("synctalk_renderer_active_streams") == 0

    async def too_big(stub, channel, servicer) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await render(stub, 3)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "needs 2 MiB of device memory" in err.value.details()  # 2.25 MiB > 2
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert len(await render(stub, 3, avatar="wide")) == 3  # 1.03 MiB fits

    run_with_server(too_big, settings(store, resident="on", device_frames_mb=2))


class _FaultyRunner:
    """Wraps a runner: the first call sleeps or raises, later calls pass through."""

    def __init__(self, runner: Any, sleep_s: float = 0.0, error: BaseException | None = None):
        self.runner, self.sleep_s, self.error = runner, sleep_s, error
        self.audio_shape = runner.audio_shape
        self.calls = 0
        self.returned = threading.Event()

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        self.calls += 1
        try:
            if self.calls == 1 and self.error is not None:
                raise self.error
            if self.calls == 1:
                time.sleep(self.sleep_s)
            return self.runner(image, audio)
        finally:
            self.returned.set()


def test_a_stalled_batch_ends_its_streams_unavailable_and_health_recovers(store: Path) -> None:
    async def body(stub, channel, servicer) -> None:
        model = await asyncio.to_thread(servicer.store.model, "tiny", "ave")
        faulty = _FaultyRunner(model.runner, sleep_s=1.5)
        model.runner = faulty
        call = asyncio.create_task(render(stub, 3))
        await asyncio.sleep(0.9)
        assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"renderer {servicer.name} stalled" in err.value.details()
        assert "0.4 s deadline" in err.value.details()
        for _ in range(50):  # SERVING again once the stuck batch returns
            if await health_status(channel) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert [f.index for f in await render(stub, 4)] == [0, 1, 2, 3]
        assert servicer.batcher.stalls == 1

    run_with_server(body, settings(store, batch_deadline_s=0.4))


def test_gpu_out_of_memory_in_the_unet_is_resource_exhausted_and_the_next_stream_works(
        store: Path) -> None:
    async def body(stub, channel, servicer) -> None:
        model = await asyncio.to_thread(servicer.store.model, "tiny", "ave")
        model.runner = _FaultyRunner(model.runner, error=torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await render(stub, 3)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == "renderer out of GPU memory, retry"
        assert len(await render(stub, 3)) == 3
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING

    run_with_server(body, settings(store, resident="on"))
