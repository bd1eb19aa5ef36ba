"""The CPU kernels against the float reference: parity, the mask, identity paste, no seam."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kernels import cpu, reference, select_backend
from kernels.reference import CROP, MASK_COLS, MASK_ROWS, RING, WINDOW, ring_margin
from tests.support.kernels import random_batch


def smooth_frame(h: int, w: int, phase: float = 0.0) -> np.ndarray:
    """Low-frequency BGR texture: bilinear resampling keeps it within a grey level."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [
        120 + 60 * np.sin(2 * np.pi * (x / 97 + k * 0.3) + phase) + 45 * np.cos(2 * np.pi * y / 83)
        for k in range(3)
    ]
    return np.clip(np.rint(np.stack(chans, axis=-1)), 0, 255).astype(np.uint8)


def grey_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_crop_mask_matches_reference(dtype: type) -> None:
    rng = np.random.default_rng(11)
    frames, boxes = random_batch(rng, 10)
    ref = reference.crop_mask(frames, boxes, dtype=np.float64)
    got = cpu.crop_mask(frames, boxes, dtype=dtype)
    assert got.shape == (10, 6, WINDOW, WINDOW) and got.dtype == dtype
    assert grey_diff(got * 255.0, ref * 255.0) <= 1.0


def test_crop_mask_accepts_a_stacked_batch_and_fills_out() -> None:
    rng = np.random.default_rng(12)
    stacked = rng.integers(0, 256, (3, 96, 130, 3), dtype=np.uint8)
    boxes = np.array([[-20, 10, 90, 120], [40, -7, 129, 82], [5, 5, 64, 64]])
    out = np.full((3, 6, WINDOW, WINDOW), np.nan, dtype=np.float32)
    got = cpu.crop_mask(stacked, boxes, out=out)
    assert got is out and not np.isnan(out).any()
    ref = reference.crop_mask(list(stacked), boxes, dtype=np.float64)
    assert grey_diff(out * 255.0, ref * 255.0) <= 1.0


def test_mask_blanks_exactly_the_inside_and_keeps_the_ring() -> None:
    rng = np.random.default_rng(13)
    frames, boxes = random_batch(rng, 4)
    x = cpu.crop_mask(frames, boxes)
    inside = np.zeros((WINDOW, WINDOW), dtype=bool)
    inside[MASK_ROWS[0] : MASK_ROWS[1], MASK_COLS[0] : MASK_COLS[1]] = True
    assert (x[:, 3:, inside] == 0).all()
    assert (x[:, 3:, ~inside] == x[:, :3, ~inside]).all()
    assert (x[:, :3, inside] > 0).mean() > 0.9
    assert inside.sum() == (309 - 5 + 1) * (314 - 5 + 1)


def test_crop_window_is_the_inner_part_of_the_328_resize() -> None:
    rng = np.random.default_rng(14)
    frame = rng.integers(0, 256, (500, 600, 3), dtype=np.uint8)
    box = np.array([[37, 61, 37 + 411, 61 + 411]])
    full = cv2.resize(frame[61:472, 37:448], (CROP, CROP), interpolation=cv2.INTER_LINEAR)
    got = cpu.crop_mask([frame], box)[0, :3].transpose(1, 2, 0) * 255.0
    assert grey_diff(got, full[RING : RING + WINDOW, RING : RING + WINDOW]) <= 0.01


@pytest.mark.parametrize("feather", [0.08, 0.0, 0.2])
def test_paste_back_matches_reference(feather: float) -> None:
    rng = np.random.default_rng(15)
    frames, boxes = random_batch(rng, 8)
    pred = rng.random((8, 3, WINDOW, WINDOW), dtype=np.float32)
    want = [f.copy() for f in frames]
    got = [f.copy() for f in frames]
    reference.paste_back(want, boxes, pred, feather=feather)
    cpu.paste_back(got, boxes, pred, feather=feather)
    assert max(grey_diff(a, b) for a, b in zip(want, got, strict=True)) <= 1.0
    changed = sum(int((g != f).any(axis=-1).sum()) for g, f in zip(got, frames, strict=True))
    assert changed > 1000


def test_paste_back_accepts_float16_predictions() -> None:
    rng = np.random.default_rng(16)
    frames, boxes = random_batch(rng, 3)
    pred = rng.random((3, 3, WINDOW, WINDOW)).astype(np.float16)
    want = [f.copy() for f in frames]
    reference.paste_back(want, boxes, pred.astype(np.float64))
    cpu.paste_back(frames, boxes, pred)
    assert max(grey_diff(a, b) for a, b in zip(want, frames, strict=True)) <= 1.0


def test_paste_back_leaves_pixels_outside_the_box_alone() -> None:
    rng = np.random.default_rng(17)
    frame = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    box = np.array([[-30, 50, 120, 200]])
    before = frame.copy()
    cpu.paste_back([frame], box, np.zeros((1, 3, WINDOW, WINDOW), np.float32))
    outside = np.ones(frame.shape[:2], dtype=bool)
    outside[50:200, 0:120] = False
    assert (frame[outside] == before[outside]).all()
    assert (frame[100:150, 20:100] < before[100:150, 20:100]).any()


def test_pasting_the_source_crop_back_leaves_the_frame_unchanged() -> None:
    frames = [smooth_frame(300, 400), smooth_frame(260, 300, 1.0)]
    rng = np.random.default_rng(18)
    frames.append(rng.integers(0, 256, (400, 420, 3), dtype=np.uint8))
    boxes = np.array(
        [[60, 40, 60 + 237, 40 + 237], [-40, 90, -40 + 201, 90 + 201], [50, 30, 378, 358]]
    )
    before = [f.copy() for f in frames]
    pred = cpu.crop_mask(frames, boxes)[:, :3]
    cpu.paste_back(frames, boxes, pred)
    for f, b in zip(frames, before, strict=True):
        assert grey_diff(f, b) <= 1.0


def seam_band_gradient(img: np.ndarray, box: np.ndarray) -> float:
    """Mean |step| between horizontally/vertically adjacent pixels, taken across the four box
    edges over a band from 3 px outside the box to 3 px past the ring margin inside."""
    x0, y0, x1, y1 = (int(v) for v in box)
    reach = int(np.ceil(ring_margin(x1 - x0))) + 3
    f = img.astype(np.float64)
    dx = np.abs(np.diff(f, axis=1)).mean(axis=-1)
    dy = np.abs(np.diff(f, axis=0)).mean(axis=-1)
    rows, cols = slice(y0 + reach, y1 - reach), slice(x0 + reach, x1 - reach)
    parts = [
        dx[rows, x0 - 3 : x0 + reach],
        dx[rows, x1 - reach - 1 : x1 + 2],
        dy[y0 - 3 : y0 + reach, cols],
        dy[y1 - reach - 1 : y1 + 2, cols],
    ]
    return float(np.mean(np.concatenate([p.ravel() for p in parts])))


def hard_paste(frame: np.ndarray, box: np.ndarray, pred: np.ndarray) -> None:
    """The seed's paste: prediction into the 328 crop, resized back, written over the box."""
    x0, y0, x1, y1 = (int(v) for v in box)
    img = cv2.resize(frame[y0:y1, x0:x1], (CROP, CROP), interpolation=cv2.INTER_LINEAR)
    img[RING : RING + WINDOW, RING : RING + WINDOW] = np.rint(pred.transpose(1, 2, 0) * 255)
    frame[y0:y1, x0:x1] = cv2.resize(img, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)


def test_no_seam_where_a_brighter_face_is_pasted() -> None:
    source = smooth_frame(480, 560)
    box = np.array([[90, 60, 90 + 380, 60 + 380]])
    brighter = np.clip(cpu.crop_mask([source], box)[:, :3] + 40 / 255, 0, 1).astype(np.float32)
    base = seam_band_gradient(source, box[0])

    feathered = source.copy()
    cpu.paste_back([feathered], box, brighter)
    hard = source.copy()
    hard_paste(hard, box[0], brighter[0])
    stepped = source.copy()
    cpu.paste_back([stepped], box, brighter, feather=0.0)

    inside = feathered[200:300, 200:300].astype(int) - source[200:300, 200:300]
    assert inside.mean() > 35
    assert abs(seam_band_gradient(feathered, box[0]) / base - 1) <= 0.2
    assert seam_band_gradient(hard, box[0]) / base - 1 > 0.2
    assert seam_band_gradient(stepped, box[0]) / base - 1 > 0.2

    def largest_step(img: np.ndarray) -> float:
        d = img.astype(np.float64) - source
        return float(max(np.abs(np.diff(d, axis=0)).max(), np.abs(np.diff(d, axis=1)).max()))

    # steepest raised-cosine step for a 40-level change, plus rounding/resampling noise
    slope = 40 * np.pi / (2 * 0.08 * 380)
    assert largest_step(feathered) <= slope + 3
    assert largest_step(hard) > 20 and largest_step(stepped) > 20


def test_float_boxes_are_rounded_to_whole_pixels() -> None:
    rng = np.random.default_rng(19)
    frames, boxes = random_batch(rng, 3)
    jittered = boxes.astype(np.float32) + rng.uniform(-0.4, 0.4, boxes.shape).astype(np.float32)
    assert (cpu.crop_mask(frames, jittered) == cpu.crop_mask(frames, boxes)).all()


@pytest.mark.parametrize(
    ("frames", "boxes", "field"),
    [
        ([np.zeros((8, 8, 3), np.uint8)], np.zeros((1, 3), int), "boxes"),
        ([np.zeros((8, 8, 3), np.uint8)], np.array([[0, 0, np.nan, 4]]), "boxes"),
        ([np.zeros((8, 8, 3), np.uint8)], np.array([["0", "0", "4", "4"]]), "boxes"),
        ([np.zeros((8, 8, 3), np.uint8)], np.array([[4, 0, 4, 4]]), "boxes[0]"),
        ([np.zeros((8, 8), np.uint8)], np.array([[0, 0, 4, 4]]), "frames[0]"),
        ([np.zeros((8, 8, 3), np.float32)], np.array([[0, 0, 4, 4]]), "frames[0]"),
        ([np.zeros((8, 8, 3), np.uint8)] * 2, np.array([[0, 0, 4, 4]]), "boxes"),
    ],
)
def test_bad_input_names_the_field(frames: list[np.ndarray], boxes: np.ndarray, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field.replace('[', '.').replace(']', '.')}:"):
        cpu.crop_mask(frames, boxes)


def test_paste_back_rejects_bad_pred_and_feather() -> None:
    frames = [np.zeros((40, 40, 3), np.uint8)]
    boxes = np.array([[0, 0, 30, 30]])
    with pytest.raises(ValueError, match="^pred:"):
        cpu.paste_back(frames, boxes, np.zeros((1, 3, 328, 328), np.float32))
    with pytest.raises(ValueError, match="^feather:"):
        cpu.paste_back(frames, boxes, np.zeros((1, 3, WINDOW, WINDOW), np.float32), feather=-0.1)


def test_backend_choice_falls_back_to_cpu_without_a_device() -> None:
    from kernels.select import cuda_status

    ok, why = cuda_status()
    if ok:
        pytest.skip("a CUDA device works here")
    assert why
    assert select_backend("auto") is cpu
    assert select_backend("cpu") is cpu
    with pytest.raises(RuntimeError, match="no working device"):
        select_backend("cuda")
    with pytest.raises(ValueError, match="prefer"):
        select_backend("tpu")
