"""The lip-sync figures of `synctalk evaluate`: each metric on inputs whose answer is known,
and the command's errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.evaluate import (
    EvalReport,
    mouth_opening,
    mouth_region,
    pearson,
    psnr,
    ssim,
    sync_distances,
    sync_score,
)


def test_mouth_opening_is_the_inner_lip_gap() -> None:
    points = np.zeros((68, 2), np.float32)
    for top, bottom in ((61, 67), (62, 66), (63, 65)):
        points[top] = (100, 200)
        points[bottom] = (100, 212)
    assert mouth_opening(points) == pytest.approx(12.0)


def test_pearson_sees_a_relation_and_refuses_a_constant() -> None:
    x = np.linspace(0, 1, 50)
    assert pearson(x, 3 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert math.isnan(pearson(x, np.ones(50)))
    with_gaps = np.where(np.arange(50) % 7 == 0, np.nan, x)
    assert pearson(with_gaps, x) == pytest.approx(1.0)


def test_psnr_and_ssim_rank_noise_levels() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    light = np.clip(clean + rng.normal(0, 3, clean.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(clean + rng.normal(0, 30, clean.shape), 0, 255).astype(np.uint8)
    assert psnr(clean, clean) == math.inf and ssim(clean, clean) == pytest.approx(1.0)
    assert psnr(clean, light) > psnr(clean, heavy) > 10
    assert 1.0 > ssim(clean, light) > ssim(clean, heavy)
    assert psnr(clean, light) == pytest.approx(10 * math.log10(255**2 / np.mean(
        (clean.astype(float) - light) ** 2)))


def test_mouth_region_stays_inside_the_frame() -> None:
    ys, xs = mouth_region(np.array([0, 0, 200, 200]), np.array([5.0, 190.0]), 40.0, (200, 200, 3))
    assert xs.start == 0 and ys.stop == 200 and xs.stop > xs.start and ys.stop > ys.start
    ys, xs = mouth_region(np.array([100, 100, 300, 300]), np.array([200.0, 250.0]), 40.0,
                          (512, 512, 3))
    assert (xs.start, xs.stop) == (140, 260) and ys.start < 250 < 290 < ys.stop


def test_sync_score_finds_the_offset_of_shifted_audio() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(120, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    faces = emb[3:]  # face i shows what audio i+3 says
    score = sync_score(sync_distances(faces, emb))
    assert score.offset == 3
    assert score.lse_d == pytest.approx(0.0, abs=1e-9)
    assert score.lse_c > 0.5
    in_sync = sync_score(sync_distances(emb, emb))
    assert in_sync.offset == 0


def test_report_writes_missing_figures_as_null() -> None:
    report = EvalReport("demo", "x.wav", 10, 0.4, 1.0, 0.7)
    figures = report.as_dict()
    assert figures["mouth_psnr_db"] is None and figures["open_vs_loudness_r"] == 0.7


def test_evaluate_command_errors_exit_2(tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF not really")
    result = subprocess.run([sys.executable, "-m", "synctalk", "evaluate",
                             str(tmp_path / "nobody"), "--audio", str(wav)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "synctalk evaluate:" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_refuses_a_trim_outside_the_context() -> None:
    result = subprocess.run([sys.executable, "-m", "synctalk", "evaluate", "demo", "--text",
                             "Hello there.", "--lookahead-trim", "8"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "look-ahead trim 8" in result.stderr
    assert "Traceback" not in result.stderr
