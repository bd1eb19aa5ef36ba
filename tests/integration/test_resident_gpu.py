"""The resident renderer on a real CUDA device (the CPU twin is test_resident_render.py):
frames on the GPU within 1 grey level of the CPU resident path, crops within 1 grey level,
nvjpeg bytes that decode to the frame, and an avatar larger than free memory refused
without a crash. Skipped without torch CUDA and the CUDA kernels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from kernels import select_backend
from kernels.select import cuda_status
from synctalk.avatar import load_avatar
from synctalk.config import ModelsConfig
from synctalk.models.runners import TorchUNetRunner
from synctalk.models.unet import load_unet
from synctalk.render.device_frames import AvatarTooLarge, DeviceFrames
from synctalk.render.pipeline import FrameCache, FrameJob, RenderModel
from synctalk.render.resident import ResidentPipeline
from tests.support.avatars import make_avatar

CUDA_OK, CUDA_WHY = cuda_status()
if not torch.cuda.is_available():
    CUDA_OK, CUDA_WHY = False, "torch sees no CUDA device"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_WHY}"),
]


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("avatars")
    make_avatar(root, "hd", num_frames=8, height=540, width=960)
    return load_avatar(root / "hd")


def jobs_for(avatar, device: str) -> list[FrameJob]:
    runner = TorchUNetRunner(load_unet(avatar.unet_checkpoint("ave")), device)  # fp32 both
    model = RenderModel(avatar, "ave", runner, np.asarray(avatar.boxes), FrameCache(),
                        key=("hd", device))
    audio = np.random.default_rng(1).standard_normal((8, 32, 16, 16)).astype(np.float32)
    return [FrameJob(model, i, audio[i], crop_only=i == 7) for i in range(8)]


def test_gpu_frames_and_crops_match_the_cpu_resident_path(avatar) -> None:
    cpu = ResidentPipeline(DeviceFrames("cpu", 2**30))
    gpu = ResidentPipeline(DeviceFrames("cuda", 2**30), select_backend("cuda"))
    try:
        want = cpu.render(jobs_for(avatar, "cpu"))
        got = gpu.render(jobs_for(avatar, "cuda"))
        encoded = gpu.render_encoded(jobs_for(avatar, "cuda"))
    finally:
        cpu.close()
    diffs = [int(np.abs(a.astype(int) - b).max()) for a, b in zip(want, got, strict=True)]
    # Crops differ by < 1 grey level; the random U-Net may amplify that a little at the
    # mouth, so the whole frame is held to the mean and the crop-only output to 1 level.
    assert diffs[-1] <= 1, diffs
    for a, b in zip(want[:-1], got[:-1], strict=True):
        assert np.abs(a.astype(np.float64) - b).mean() <= 1.0
    for image, frame in zip(got, encoded, strict=True):
        decoded = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == image.shape
        assert np.abs(decoded.astype(np.float64) - image).mean() < 3.0  # JPEG q85


def test_an_avatar_larger_than_free_gpu_memory_is_refused(avatar) -> None:
    free, _ = torch.cuda.mem_get_info()
    huge = type("M", (), {"key": ("huge", 0), "avatar": type("A", (), {
        "name": "huge", "num_frames": int(free // (1080 * 1920 * 3)) + 64, "height": 1080,
        "width": 1920, "frames": None})()})()
    store = DeviceFrames("cuda", 2**50)
    with pytest.raises(AvatarTooLarge, match="free GPU memory"):
        store.get(huge)
    assert store.bytes == 0
    torch.ones(1, device="cuda")  # the device still works


def test_the_gpu_runner_compiles_or_falls_back(avatar) -> None:
    runner = TorchUNetRunner(load_unet(avatar.unet_checkpoint("ave")), "cuda", fp16=True)
    x = torch.rand((3, 6, 320, 320), device="cuda")
    a = torch.rand((3, 32, 16, 16), device="cuda")
    eager = runner.run_tensor(x, a).float()
    sizes = runner.compile_for([4], budget_s=240)
    out = runner.run_tensor(x, a).float()
    assert out.shape == eager.shape
    assert (out - eager).abs().max().item() < 0.02 or sizes == ()
    assert ModelsConfig().unet_compile


def test_the_render_service_on_cuda_is_resident_and_encodes_on_the_gpu(tmp_path) -> None:
    import asyncio

    from services.renderer.server import build_server, build_servicer
    from synctalk.config import load_settings
    from synctalk.rpc.channel import dial
    from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2, renderer_pb2_grpc

    make_avatar(tmp_path, "tiny")
    cfg = load_settings(models={"device": "cuda", "avatars_dir": str(tmp_path),
                                "unet_compile": False},
                        services={"default_avatar": "tiny"}, server={"drain_grace_s": 1.0})
    audio = np.random.default_rng(3).standard_normal((40, 32, 16, 16)).astype(np.float32)

    async def requests():
        yield renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar="tiny"))
        for i, window in enumerate(audio):
            yield renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(
                index=i, mode="ave", rms=0.1, voiced=True, features=common_pb2.Tensor(
                    data=window.tobytes(), shape=[32, 16, 16], dtype=common_pb2.DTYPE_FLOAT32)))

    async def main():
        servicer = build_servicer(cfg)
        server = build_server(cfg, "127.0.0.1", 0, servicer)
        await server.start()
        try:
            async with dial(server.address) as channel:
                stub = renderer_pb2_grpc.RendererStub(channel)
                return servicer, [f async for f in stub.Render(requests(), timeout=120)]
        finally:
            await server.drain_and_stop()
            await servicer.close()

    servicer, frames = asyncio.run(main())
    assert servicer.resident and servicer.pipeline.on_gpu and servicer.batcher.max_batch == 64
    assert [f.index for f in frames] == list(range(40))
    image = cv2.imdecode(np.frombuffer(frames[5].data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (256, 256, 3) == (frames[5].height, frames[5].width, 3)
