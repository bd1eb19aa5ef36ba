"""The CUDA sources compile (nvcc and NVRTC), a planted error fails the check, and the kernel
code itself, built for the host with a tiny shim, computes what the reference computes."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernels import compile as kc
from kernels import crop_mask, reference
from kernels.reference import WINDOW, visible
from tests.support.kernels import random_batch
from tests.support.paths import ROOT

ENTRIES = {
    "crop_mask.cu": {"crop_mask_f32", "crop_mask_f16"},
    "paste_blend.cu": {"paste_blend_f32", "paste_blend_f16"},
}
PLANT_AFTER = "    float v[3];\n    sample_crop("
PLANTED = "    float v[3];\n    int* planted = 1.5f;\n    sample_crop("


def compilers() -> list[str]:
    found = []
    if kc.nvcc_path():
        found.append("nvcc")
    if kc.nvrtc_module() is not None:
        found.append("nvrtc")
    return found


needs_compiler = pytest.mark.skipif(not compilers(), reason="no nvcc and no NVRTC")


@needs_compiler
def test_ci_compile_check_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kernels.compile", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ENTRIES:
        for arch in kc.DEFAULT_ARCHS:
            assert f"ok   {name} {arch}" in proc.stdout


@pytest.mark.parametrize("compiler", ["nvcc", "nvrtc"])
@pytest.mark.parametrize("source", sorted(ENTRIES))
def test_each_compiler_builds_ptx_for_ampere_and_hopper(compiler: str, source: str) -> None:
    if compiler not in compilers():
        pytest.skip(f"{compiler} unavailable")
    assert {p.name for p in kc.kernel_sources()} == set(ENTRIES)
    for arch in ("sm_80", "sm_90"):
        res = kc.compile_file(kc.KERNEL_DIR / source, arch, compiler)
        assert res.compiler == compiler
        assert f".target {arch}" in res.ptx
        for entry in ENTRIES[source]:
            assert f".entry {entry}(" in res.ptx


def planted_copy(tmp_path: Path) -> Path:
    for src in kc.kernel_sources():
        shutil.copy(src, tmp_path / src.name)
    target = tmp_path / "crop_mask.cu"
    text = target.read_text()
    assert PLANT_AFTER in text
    target.write_text(text.replace(PLANT_AFTER, PLANTED, 1))
    return target


@pytest.mark.parametrize("compiler", ["nvcc", "nvrtc"])
def test_a_planted_type_error_fails_with_the_compiler_message(
    compiler: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if compiler not in compilers():
        pytest.skip(f"{compiler} unavailable")
    planted = planted_copy(tmp_path)
    with pytest.raises(kc.CompileError, match="planted") as err:
        kc.compile_file(planted, "sm_80", compiler)
    assert 'cannot be used to initialize an entity of type "int *"' in str(err.value)
    rc = kc.main(["--check", "--compiler", compiler, str(tmp_path / "paste_blend.cu")])
    assert rc == 1
    stderr = capsys.readouterr().err
    assert "FAIL paste_blend.cu sm_80" in stderr
    assert "crop_mask.cu(" in stderr and "planted" in stderr


def test_expand_source_inlines_local_includes_with_line_markers() -> None:
    text = kc.expand_source(kc.KERNEL_DIR / "paste_blend.cu")
    assert '#include "crop_mask.cu"' not in text
    assert 'extern "C" __global__ void crop_mask_f32' in text
    assert '#line 1 "crop_mask.cu"' in text and '#line 1 "paste_blend.cu"' in text


HARNESS = r"""
#include <algorithm>
#include <cmath>
#define __global__
#define __device__
#define __forceinline__ inline
#define asm(...) ((void)0)
struct Dim3 { int x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
using std::max;
using std::min;
static inline float cospif(float x) { return std::cos(3.14159265358979323846f * x); }
#include "paste_blend.cu"
extern "C" void run(int paste, const long long* meta, void* buf, float feather, int batch,
                    int gx, int gy, int backwards) {
    blockDim = {32, 8, 1};
    int n = batch * gy * gx * 8 * 32;
    for (int k = 0; k < n; ++k) {
        int i = backwards ? n - 1 - k : k;
        threadIdx = {i % 32, (i / 32) % 8, 0};
        blockIdx = {(i / 256) % gx, (i / 256 / gx) % gy, i / 256 / gx / gy};
        if (paste) paste_blend_f32(meta, (const float*)buf, feather, batch);
        else crop_mask_f32(meta, (float*)buf, batch);
    }
}
"""


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """The float32 kernels compiled for the CPU: a shim maps CUDA's qualifiers and thread
    indices to plain C++, and a loop walks the grid one thread at a time."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ unavailable")
    tmp = tmp_path_factory.mktemp("host_kernels")
    (tmp / "harness.cpp").write_text(HARNESS)
    lib = tmp / "kernels.so"
    subprocess.run(
        [
            gxx,
            "-O1",
            "-shared",
            "-fPIC",
            f"-I{kc.KERNEL_DIR}",
            str(tmp / "harness.cpp"),
            "-o",
            str(lib),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dll = ctypes.CDLL(str(lib))
    dll.run.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float]
    dll.run.argtypes += [ctypes.c_int] * 4
    return dll


def frame_meta(frames: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    rows = [
        [f.ctypes.data, f.shape[1], f.shape[0], f.strides[0], *b]
        for f, b in zip(frames, boxes, strict=True)
    ]
    return np.array(rows, dtype=np.int64)


def test_host_built_crop_kernel_matches_reference(host_kernels: ctypes.CDLL) -> None:
    frames, boxes = random_batch(np.random.default_rng(21), 5)
    out = np.full((5, 6, WINDOW, WINDOW), np.nan, dtype=np.float32)
    meta = frame_meta(frames, boxes)
    host_kernels.run(0, meta.ctypes.data, out.ctypes.data, 0.0, 5, WINDOW // 32, WINDOW // 8, 0)
    assert not np.isnan(out).any()
    ref = reference.crop_mask(frames, boxes, dtype=np.float64)
    assert np.abs(out * 255.0 - ref * 255.0).max() <= 1.0


def test_host_built_crop_kernel_matches_the_cpu_path(host_kernels: ctypes.CDLL) -> None:
    """The kernel samples with OpenCV's 8-bit arithmetic, so GPU and CPU crops agree (a
    0.8-grey crop difference comes out of a trained U-Net as several grey levels)."""
    frames, boxes = random_batch(np.random.default_rng(5), 5)
    out = np.full((5, 6, WINDOW, WINDOW), np.nan, dtype=np.float32)
    meta = frame_meta(frames, boxes)
    host_kernels.run(0, meta.ctypes.data, out.ctypes.data, 0.0, 5, WINDOW // 32, WINDOW // 8, 0)
    diff = np.abs(out * 255.0 - crop_mask(frames, boxes) * 255.0)
    assert diff.max() <= 1.0 + 1e-3 and (diff > 0.5).mean() < 1e-3


@pytest.mark.parametrize("feather", [0.08, 0.0])
@pytest.mark.parametrize("backwards", [0, 1])
def test_host_built_paste_kernel_matches_reference_in_place(
    host_kernels: ctypes.CDLL, backwards: int, feather: float
) -> None:
    """Walking the grid forwards and backwards gives the same frames: the in-place paste never
    reads a pixel that another thread writes."""
    rng = np.random.default_rng(22)
    frames, boxes = random_batch(rng, 5)
    pred = rng.random((5, 3, WINDOW, WINDOW), dtype=np.float32)
    want = [f.copy() for f in frames]
    reference.paste_back(want, boxes, pred, feather=feather)
    spans = [visible(b, f.shape) for b, f in zip(boxes, frames, strict=True)]
    gx = -(-max(x1 - x0 for x0, _, x1, _ in spans) // 32)
    gy = -(-max(y1 - y0 for _, y0, _, y1 in spans) // 8)
    meta = frame_meta(frames, boxes)
    host_kernels.run(1, meta.ctypes.data, pred.ctypes.data, feather, 5, gx, gy, backwards)
    for w, g in zip(want, frames, strict=True):
        assert np.abs(w.astype(int) - g).max() <= 1


def test_cuda_launchers_refuse_host_arrays_before_touching_a_device() -> None:
    pytest.importorskip("cupy")
    from kernels import cuda

    frames = [np.zeros((40, 40, 3), np.uint8)]
    with pytest.raises(TypeError, match=r"^frames\[0\]: expected a GPU array"):
        cuda.crop_mask(frames, np.array([[0, 0, 30, 30]]))
    import torch

    with pytest.raises(TypeError, match=r"^frames\[0\]: expected a GPU array"):
        cuda.crop_mask([torch.zeros((40, 40, 3), dtype=torch.uint8)], np.array([[0, 0, 30, 30]]))
    with pytest.raises(ValueError, match="^dtype:"):
        cuda.crop_mask(frames, np.array([[0, 0, 30, 30]]), dtype=np.float64)
