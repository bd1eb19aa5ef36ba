"""The CUDA kernels against the float reference on a real device; skipped without one."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import reference
from kernels.reference import WINDOW
from kernels.select import cuda_status
from tests.support.kernels import random_batch

CUDA_OK, CUDA_WHY = cuda_status()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_WHY}"),
]

POISON = 0xAB
PAD = 5


def fresh_rng() -> tuple[np.random.Generator, int]:
    """New random data on every run; the seed goes into failure messages to replay it."""
    seed = int(np.random.SeedSequence().entropy % 2**63)
    return np.random.default_rng(seed), seed


def pitched(frames: list[np.ndarray]):
    """Device frames inside wider poisoned buffers: row pitch > width * 3, and any write past
    a row's end shows up in the padding."""
    import cupy

    bufs, views = [], []
    for f in frames:
        h, w = f.shape[:2]
        buf = cupy.full((h, w + PAD, 3), POISON, dtype=cupy.uint8)
        buf[:, :w] = cupy.asarray(f)
        bufs.append(buf)
        views.append(buf[:, :w])
    return bufs, views


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_crop_mask_matches_reference_and_writes_every_value(dtype: type) -> None:
    import cupy

    from kernels import cuda

    rng, seed = fresh_rng()
    frames, boxes = random_batch(rng, 12)
    _, views = pitched(frames)
    out = cupy.full((12, 6, WINDOW, WINDOW), np.nan, dtype=dtype)
    got = cuda.crop_mask(views, boxes, out=out, dtype=dtype)
    assert got is out
    host = cupy.asnumpy(out).astype(np.float64)
    assert not np.isnan(host).any(), f"seed {seed}"
    ref = reference.crop_mask(frames, boxes, dtype=np.float64)
    assert np.abs(host * 255 - ref * 255).max() <= 1.0, f"seed {seed}"


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("feather", [0.08, 0.0])
def test_paste_back_matches_reference_in_place(dtype: type, feather: float) -> None:
    import cupy

    from kernels import cuda

    rng, seed = fresh_rng()
    frames, boxes = random_batch(rng, 12)
    pred = rng.random((12, 3, WINDOW, WINDOW)).astype(dtype)
    want = [f.copy() for f in frames]
    reference.paste_back(want, boxes, pred.astype(np.float64), feather=feather)
    bufs, views = pitched(frames)
    cuda.paste_back(views, cupy.asarray(boxes), cupy.asarray(pred), feather=feather)
    cupy.cuda.get_current_stream().synchronize()
    for w, buf in zip(want, bufs, strict=True):
        host = cupy.asnumpy(buf)
        assert (host[:, w.shape[1] :] == POISON).all(), f"seed {seed}"
        assert np.abs(host[:, : w.shape[1]].astype(int) - w).max() <= 1, f"seed {seed}"


def test_a_stacked_device_batch_round_trips() -> None:
    import cupy

    from kernels import cuda

    rng = np.random.default_rng(5)
    stacked = rng.integers(0, 256, (4, 200, 260, 3), dtype=np.uint8)
    boxes = np.array([[-10, 20, 170, 200], [100, 50, 259, 209], [3, 3, 331, 331], [40, 40, 41, 41]])
    dev = cupy.asarray(stacked)
    x = cuda.crop_mask(dev, boxes)
    ref = reference.crop_mask(list(stacked), boxes, dtype=np.float64)
    assert np.abs(cupy.asnumpy(x) * 255 - ref * 255).max() <= 1.0
    cuda.paste_back(dev, boxes, x[:, :3])
    want = stacked.copy()
    reference.paste_back(list(want), boxes, ref[:, :3])
    assert np.abs(cupy.asnumpy(dev).astype(int) - want).max() <= 1


def test_torch_cuda_tensors_are_used_without_copies() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from kernels import cuda

    rng = np.random.default_rng(6)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 180, 240, 3), dtype=np.uint8)).cuda()
    boxes = np.array([[20, 10, 170, 160], [-30, 40, 150, 220]])
    out = torch.empty((2, 6, WINDOW, WINDOW), dtype=torch.float16, device="cuda")
    assert cuda.crop_mask(list(frames), boxes, out=out, dtype=np.float16) is out
    before = frames.clone()
    cuda.paste_back(list(frames), boxes, torch.zeros((2, 3, WINDOW, WINDOW), device="cuda"))
    torch.cuda.synchronize()
    assert (frames != before).any()
    ref = reference.crop_mask(list(before.cpu().numpy()), boxes, dtype=np.float64)
    assert np.abs(out.float().cpu().numpy() * 255 - ref * 255).max() <= 1.0


def test_select_backend_takes_cuda() -> None:
    from kernels import cuda, select_backend

    assert select_backend("auto") is cuda
    assert select_backend("cuda") is cuda


def test_gpu_crops_equal_the_cpu_paths() -> None:
    """The kernel samples with OpenCV's 8-bit arithmetic: GPU and CPU crops agree except
    about 1 pixel in 10^4 (off by one grey level), in fp32 and fp16."""
    import cupy

    from kernels import cpu, cuda

    rng, seed = fresh_rng()
    frames, boxes = random_batch(rng, 6)
    want = cpu.crop_mask(frames, boxes) * 255
    for dtype in (np.float32, np.float16):
        got = cupy.asnumpy(cuda.crop_mask([cupy.asarray(f) for f in frames], boxes,
                                          dtype=dtype)).astype(np.float32) * 255
        diff = np.abs(got - want)
        assert diff.max() <= 1.0 + 0.2 * (dtype == np.float16), f"seed {seed}"
        assert (diff > 0.5).mean() < 1e-3, f"seed {seed} {dtype}"
