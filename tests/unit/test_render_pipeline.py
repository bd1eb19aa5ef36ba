"""The frame pipeline on tiny real avatars (U-Net width 0.125): what it changes and what it
keeps, crop-only output, mixed-avatar batches, no seam at the box border, the walk and the
silence rule, and the bounded frame cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from kernels import RING, WINDOW, select_backend
from kernels.cpu import resized_crop
from kernels.reference import CROP
from synctalk.avatar import PingPong, load_avatar
from synctalk.config import ModelsConfig
from synctalk.render.idle import HANGOVER_FRAMES, IdleRule, is_silent, silence_window
from synctalk.render.pipeline import (
    FrameCache,
    FrameJob,
    FramePipeline,
    StreamPlan,
    load_render_model,
    render_offline,
)
from tests.support.avatars import avatar_store

MODELS = ModelsConfig(device="cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return avatar_store(tmp_path_factory.mktemp("avatars"), "wide", num_frames=6, height=200,
                        width=300, seed=3)


@pytest.fixture(scope="module")
def pipeline() -> FramePipeline:
    return FramePipeline(select_backend("cpu"))


def model_of(store: Path, name: str):
    return load_render_model(load_avatar(store / name), "ave", MODELS)


def audio_windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 32, 16, 16)).astype(np.float32)


def test_only_the_box_changes_and_the_face_is_the_unets(store: Path, pipeline: FramePipeline) -> None:
    model = model_of(store, "tiny")
    audio = audio_windows(4)
    jobs = [FrameJob(model, s, audio[k]) for k, s in enumerate([0, 5, 11, 5])]
    out = pipeline.render(jobs)
    crops = select_backend("cpu").crop_mask([model.frame(j.source) for j in jobs],
                                            model.boxes[[j.source for j in jobs]])
    pred = model.runner(crops, audio)
    for job, image, face in zip(jobs, out, pred, strict=True):
        source = model.frame(job.source)
        x0, y0, x1, y1 = model.boxes[job.source]
        assert image.shape == source.shape and image.dtype == np.uint8
        outside = np.ones(source.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(image[outside], source[outside])
        # The box centre is the U-Net's face (alpha is 1 there), resized back to the box.
        face_px = cv2.resize(np.rint(face.transpose(1, 2, 0) * 255).astype(np.uint8),
                             (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        cy, cx = (y1 - y0) // 2, (x1 - x0) // 2
        centre = image[y0 + cy - 10 : y0 + cy + 10, x0 + cx - 10 : x0 + cx + 10].astype(int)
        assert np.abs(centre - face_px[cy - 10 : cy + 10, cx - 10 : cx + 10]).max() <= 2
        assert np.abs(centre - source[y0 + cy - 10 : y0 + cy + 10,
                                      x0 + cx - 10 : x0 + cx + 10]).mean() > 5
    assert pipeline.times.frames >= 4 and pipeline.times.seconds["unet"] > 0


def test_crop_only_is_the_328_crop_with_the_face_in_its_window(store: Path,
                                                               pipeline: FramePipeline) -> None:
    model = model_of(store, "tiny")
    audio = audio_windows(1, seed=2)
    full, crop = pipeline.render([FrameJob(model, 3, audio[0]), FrameJob(model, 3, audio[0], True)])
    assert full.shape == (256, 256, 3) and crop.shape == (CROP, CROP, 3)
    ring = resized_crop(model.frame(3), model.boxes[3])
    inner = np.zeros((CROP, CROP), bool)
    inner[RING : RING + WINDOW, RING : RING + WINDOW] = True
    assert np.array_equal(crop[~inner], ring[~inner])
    crops = select_backend("cpu").crop_mask([model.frame(3)], model.boxes[3:4])
    face = np.rint(model.runner(crops, audio)[0].transpose(1, 2, 0) * 255)
    assert np.abs(crop[inner].astype(int) - face.reshape(-1, 3)).max() <= 1


def test_a_batch_mixing_avatars_equals_each_rendered_alone(store: Path,
                                                           pipeline: FramePipeline) -> None:
    tiny, wide = model_of(store, "tiny"), model_of(store, "wide")
    audio = audio_windows(5, seed=4)
    jobs = [FrameJob(tiny, 1, audio[0]), FrameJob(wide, 2, audio[1]), FrameJob(tiny, 7, audio[2]),
            FrameJob(wide, 5, audio[3], True), FrameJob(tiny, 0, audio[4])]
    mixed = pipeline.render(jobs)
    alone = [pipeline.render([job])[0] for job in jobs]
    assert [m.shape for m in mixed] == [(256, 256, 3), (200, 300, 3), (256, 256, 3),
                                        (CROP, CROP, 3), (256, 256, 3)]
    for m, a in zip(mixed, alone, strict=True):
        assert np.abs(m.astype(int) - a).max() <= 1


def border_gradient(img: np.ndarray, box: np.ndarray, reach: int = 3) -> float:
    """Mean |step| between neighbouring pixels across the four box edges, over a band from
    `reach` px outside to `reach` px inside the box (the seed's hard paste puts its step
    right on the edge)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    f = img.astype(np.float64)
    dx = np.abs(np.diff(f, axis=1)).mean(axis=-1)
    dy = np.abs(np.diff(f, axis=0)).mean(axis=-1)
    rows, cols = slice(y0 + reach, y1 - reach), slice(x0 + reach, x1 - reach)
    parts = [dx[rows, x0 - reach : x0 + reach], dx[rows, x1 - reach - 1 : x1 + reach - 1],
             dy[y0 - reach : y0 + reach, cols], dy[y1 - reach - 1 : y1 + reach - 1, cols]]
    return float(np.mean(np.concatenate([p.ravel() for p in parts])))


def test_no_seam_at_the_crop_box_border(store: Path, pipeline: FramePipeline) -> None:
    model = model_of(store, "tiny")
    audio = audio_windows(6, seed=5)
    sources = [0, 3, 6, 9, 11, 4]
    out = pipeline.render([FrameJob(model, s, a) for s, a in zip(sources, audio, strict=True)])
    crops = select_backend("cpu").crop_mask([model.frame(s) for s in sources],
                                            model.boxes[sources])
    pred = model.runner(crops, audio)
    for s, image, face in zip(sources, out, pred, strict=True):
        source, box = model.frame(s), model.boxes[s]
        base = border_gradient(source, box)
        assert abs(border_gradient(image, box) / base - 1) <= 0.2, s
        hard = source.copy()  # the seed's paste of the same face: a visible edge
        x0, y0, x1, y1 = (int(v) for v in box)
        crop = resized_crop(source, box).copy()
        crop[RING : RING + WINDOW, RING : RING + WINDOW] = np.rint(face.transpose(1, 2, 0) * 255)
        hard[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        assert border_gradient(hard, box) / base - 1 > 0.2


def test_idle_rule_hangover() -> None:
    rule = IdleRule()
    voiced = [False, False, True, True, False, False, False, False, False, True, False]
    idle = [rule.step(v, 0.0) for v in voiced]
    # silent from the start: idle at once; after speech, HANGOVER_FRAMES frames keep features.
    assert HANGOVER_FRAMES == 3
    assert idle == [True, True, False, False, False, False, False, True, True, False, False]
    assert is_silent(False, 0.005) and not is_silent(False, 0.02) and not is_silent(True, 0.0)


def test_silence_window_is_steady_silence() -> None:
    window = silence_window("ave", MODELS)
    assert window.shape == (32, 16, 16) and window.dtype == np.float32
    rows = window.reshape(16, 512)
    assert np.abs(rows - rows[0]).max() == 0 and np.abs(rows).max() > 0  # no zero padding in it
    assert silence_window("ave", MODELS) is window


def test_stream_plan_walks_ping_pong_and_swaps_in_silence(store: Path, pipeline: FramePipeline) -> None:
    model = model_of(store, "tiny")
    silence = silence_window("ave", MODELS)
    plan = StreamPlan(model, start_frame=9, silence=silence)
    n = 30
    features = audio_windows(n, seed=6)
    voiced = np.array([i % 10 < 5 for i in range(n)])
    rms = np.where(voiced, 0.1, 0.0).astype(np.float32)
    frames = list(render_offline(pipeline, plan, features, rms, voiced, batch_size=4))
    walk = PingPong(12, 9)
    assert [f.index for f in frames] == list(range(n))
    assert [f.source for f in frames] == [walk.index(i) for i in range(n)]
    expected_idle = [not v and (i % 10) >= 5 + HANGOVER_FRAMES for i, v in enumerate(voiced)]
    assert [f.idle for f in frames] == expected_idle
    # An idle frame is the U-Net's answer to silence, whatever features the frame carried.
    k = expected_idle.index(True)
    again = pipeline.render([FrameJob(model, frames[k].source, silence)])[0]
    assert np.array_equal(again, frames[k].image)
    with pytest.raises(ValueError, match="start_frame"):
        StreamPlan(model, start_frame=12)


def test_missing_mode_is_file_not_found(store: Path) -> None:
    with pytest.raises(FileNotFoundError, match="whisper"):
        load_render_model(load_avatar(store / "tiny"), "whisper", MODELS)


def test_frame_cache_is_bounded_lru() -> None:
    frame = np.zeros((10, 10, 3), np.uint8)
    cache = FrameCache(max_bytes=3 * frame.nbytes)
    loads: list[int] = []

    def loader(i: int):
        return lambda: (loads.append(i), frame + i)[1]

    for i in [0, 1, 2, 0, 3, 1]:
        got = cache.get(("a", i), loader(i))
        assert got[0, 0, 0] == i and not got.flags.writeable
    assert loads == [0, 1, 2, 3, 1]  # 0 was hit, 1 was evicted by 3
    assert cache.bytes <= cache.max_bytes
    cache.drop("a")
    assert cache.bytes == 0
