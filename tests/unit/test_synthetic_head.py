"""The synthetic head models: the default landmark warp (the photo's own lips and jaw move),
the legacy jaw drop kept for old truth files, and how a clip or truth file picks one."""

from __future__ import annotations

import argparse
from functools import cache

import numpy as np
import pytest

from synctalk.avatar.landmarks import DlibLandmarker
from tests.support.clips import synthetic_clip
from training.synthetic.face import FaceRig, build_rig, load_face_photo
from training.synthetic.jaw_drop import JawDropRenderer
from training.synthetic.landmark_head import LandmarkHeadRenderer
from training.synthetic.models import make_renderer
from training.synthetic.render import HeadState


@cache
def rig(size: int = 512) -> FaceRig:
    return build_rig(load_face_photo(), size)


def _dlib(image: np.ndarray) -> np.ndarray:
    found = DlibLandmarker()(image)
    assert found.count == 1
    return found.landmarks[0]


def test_dlib_sees_the_mouth_open_as_asked_and_narrow_when_rounded() -> None:
    renderer = LandmarkHeadRenderer(rig())
    openings = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    gaps = [float(np.linalg.norm(p[66] - p[62]))
            for p in (_dlib(renderer.render(HeadState(o))) for o in openings)]
    assert all(b > a + 1.0 for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] - gaps[0] > 0.7 * renderer.max_open_px
    widths = [float(np.linalg.norm(p[54] - p[48]))
              for p in (_dlib(renderer.render(HeadState(0.5, w))) for w in (1.0, 0.7))]
    assert widths[0] - widths[1] > 0.05 * rig().mouth_width, widths


def test_a_closed_mouth_is_the_photo() -> None:
    """Opening 0 is the photo (through the same pose); a barely parted mouth is nearly so."""
    new, old = LandmarkHeadRenderer(rig()), JawDropRenderer(rig())
    state = HeadState(0.0, 1.0, blink=0.6, dx=1.3, dy=-0.4, angle=0.2)
    photo = old.finish(rig().image.copy(), state)
    assert np.array_equal(new.render(state), photo)
    cx, cy = new.to_output(np.array([rig().mouth_centre_x, rig().mouth_line_y]), state)[0].astype(int)
    half = int(rig().mouth_width)
    region = np.s_[cy - half: cy + half, cx - half: cx + half]
    barely = new.render(HeadState(0.01, 1.0, blink=0.6, dx=1.3, dy=-0.4, angle=0.2))
    diff = np.abs(barely[region].astype(int) - photo[region].astype(int)).max(axis=2)
    assert diff.mean() < 1.5 and (diff > 8).mean() < 0.03


def test_blinks_and_head_motion_match_the_legacy_model() -> None:
    new, old = LandmarkHeadRenderer(rig()), JawDropRenderer(rig())
    state = HeadState(0.8, 0.75, blink=1.0, dx=-2.0, dy=1.5, angle=-0.4)
    eyes = new.to_output(rig().landmarks[36:48], state)
    (x0, y0), (x1, y1) = eyes.min(axis=0).astype(int) - 6, eyes.max(axis=0).astype(int) + 6
    a, b = new.render(state), old.render(state)
    assert np.array_equal(a[y0:y1, x0:x1], b[y0:y1, x0:x1])
    assert np.array_equal(new.face_box(state), old.face_box(state))
    assert new.max_open_px == old.max_open_px


@pytest.mark.parametrize("width", [0.5, 0.7, 0.85, 1.0])
def test_the_mesh_never_folds(width: float) -> None:
    renderer = LandmarkHeadRenderer(rig())
    for opening in (0.0, 0.05, 0.5, 1.0):
        vertices = renderer.vertices(renderer.contour(HeadState(opening, width)))
        assert not renderer.mesh.folded(vertices), (opening, width)


def test_rendering_is_deterministic() -> None:
    state = HeadState(0.63, 0.8, 0.3, 0.7, -1.1, 0.25)
    a = LandmarkHeadRenderer(rig()).render(state)
    b = LandmarkHeadRenderer(build_rig(load_face_photo(), 512)).render(state)
    assert np.array_equal(a, b)


def test_truth_files_pick_their_head_model() -> None:
    from training.evaluate import TruthRenderer

    truth = {"size": np.int32(256), "head": np.zeros((3, 3), np.float32),
             "blink": np.zeros(3, np.float32)}
    assert isinstance(TruthRenderer(truth).renderer, JawDropRenderer)  # e.g. the bundled demo
    truth["head_model"] = np.array("landmark-warp/1")
    assert isinstance(TruthRenderer(truth).renderer, LandmarkHeadRenderer)
    assert isinstance(make_renderer(rig(256), "jaw-drop"), JawDropRenderer)
    with pytest.raises(ValueError, match="known: .*jaw-drop/1.*landmark-warp/1"):
        make_renderer(rig(256), "puppet/2")


def test_synth_command_records_and_obeys_head_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from synctalk.commands import synth

    assert str(np.load(synthetic_clip("moving").with_name("truth.npz"))["head_model"]) == "landmark-warp/1"
    parser = argparse.ArgumentParser()
    synth.register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--head-model", "puppet"])
    args = parser.parse_args(["synth", "--text", "Hi.", "--seconds", "0.4", "--out", str(tmp_path),
                              "--name", "legacy", "--size", "256", "--head-model", "jaw-drop"])
    assert args.func(args) == 0
    truth = np.load(tmp_path / "legacy" / "truth.npz")
    assert str(truth["head_model"]) == "jaw-drop/1" and truth["mouth_open"].shape == (10,)
