"""The synthetic talking head: visemes, speech, rendering, the clip and its ground truth.

`synthetic_clip(kind)` renders each test clip once per test session (the prepare tests reuse
them): "moving" through the `synctalk synth` command, "still" (no head motion) directly, and
"still-jaw-drop" (the same with the legacy head model).
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from kernels.reference import MASK_COLS, MASK_ROWS
from synctalk.audio.decode import load_audio
from synctalk.avatar.landmarks import HogDetector
from tests.support.clips import read_frames, synthetic_clip
from training.synthetic.jaw_drop import JawDropRenderer
from training.synthetic.models import make_renderer
from training.synthetic.render import HeadState, blinks, head_motion
from training.synthetic.speech import speak
from training.synthetic.visemes import Phone, frame_track, phone_shapes


def test_stress_and_length_marks_take_their_neighbours_shape() -> None:
    phones = [Phone("ˈ", 0, 10), Phone("a", 10, 20), Phone("ː", 20, 30), Phone("m", 30, 40)]
    shapes = phone_shapes(phones)
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[1][0] == 1.0 and shapes[3][0] == 0.0


def test_mouth_is_shut_for_silence_and_bilabials_and_open_for_vowels() -> None:
    rate = 16000
    # 0.4 s silence, 0.4 s "a", 0.4 s "m", 0.4 s "a", 0.4 s silence
    names = ["^", "a", "m", "a", "$"]
    phones = [Phone(p, k * 6400, (k + 1) * 6400) for k, p in enumerate(names)]
    opening, width = frame_track(phones, rate, 5 * 6400, num_frames=50)
    assert opening[:5].max() < 0.05 and opening[-5:].max() < 0.05
    assert opening[12:18].min() > 0.9 and opening[32:38].min() > 0.9
    assert opening[25] < 0.2  # the middle of the "m"
    assert np.abs(np.diff(opening)).max() < 0.45  # smoothed: no jumps between frames
    assert width.min() >= 0.5


def test_speech_is_deterministic_and_aligned_to_its_phonemes() -> None:
    a = speak("Hello world.")
    b = speak("Hello world.")
    assert np.array_equal(a.audio, b.audio)
    assert a.phones and a.phones[-1].end <= a.audio.size
    fitted = speak("Hello world.", seconds=3.0)
    assert fitted.audio.size == 3 * fitted.sample_rate


def test_head_motion_and_blinks_are_seeded_and_bounded() -> None:
    motion = head_motion(250, 3.0, seed=1)
    assert np.array_equal(motion, head_motion(250, 3.0, seed=1))
    assert np.abs(motion[:, :2]).max() <= 3.0 and np.abs(motion[:, :2]).max() > 0.5
    assert np.abs(np.diff(motion[:, :2], axis=0)).max() < 0.5  # a drift, not a jitter
    assert not head_motion(100, 0.0, seed=1).any()
    closed = blinks(250, seed=1)
    assert 1 <= (closed == 1.0).sum() <= 5 and closed.min() == 0.0


def test_legacy_renderer_opens_the_mouth_by_the_requested_amount() -> None:
    """The jaw-drop model paints a dark lens exactly max_open_px tall (the default model's
    opening is measured by dlib in test_synthetic_head.py)."""
    from training.synthetic.face import build_rig, load_face_photo

    renderer = JawDropRenderer(build_rig(load_face_photo(), 256))
    rest = renderer.render(HeadState(0.0))
    assert rest.shape == (256, 256, 3)
    cx, cy = renderer.to_output(np.array([renderer.rig.mouth_centre_x, renderer.rig.mouth_line_y]),
                                HeadState(0.0))[0].round().astype(int)
    column = slice(cx - 3, cx + 4)

    def dark_rows(image: np.ndarray) -> int:
        strip = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[cy - 5: cy + 40, column]
        return int((strip.mean(axis=1) < 60).sum())

    heights = [dark_rows(renderer.render(HeadState(o))) for o in (0.0, 0.5, 1.0)]
    assert heights[0] <= 1 and heights[0] < heights[1] < heights[2]
    assert abs(heights[2] - renderer.max_open_px) <= 3


@pytest.mark.parametrize(("head_model", "width"), [("jaw-drop/1", 1.0), ("landmark-warp/1", 1.0),
                                                    ("landmark-warp/1", 0.85), ("landmark-warp/1", 0.7),
                                                    ("landmark-warp/1", 0.5)])
def test_the_jaw_leaves_the_crop_windows_visible_border_still(head_model: str, width: float) -> None:
    """The mask leaves a 5 px border of the U-Net's window visible; if the jaw moved it, the
    border would tell the network the mouth's state and it would stop listening to audio."""
    from kernels.cpu import crop_mask
    from synctalk.avatar.boxes import crop_boxes
    from synctalk.avatar.landmarks import DlibLandmarker
    from training.synthetic.face import build_rig, load_face_photo

    renderer = make_renderer(build_rig(load_face_photo(), 512), head_model)
    rest, wide = renderer.render(HeadState(0.0)), renderer.render(HeadState(1.0, width))
    box = crop_boxes(DlibLandmarker()(rest).landmarks[:1], smooth=False)
    shut, open_ = (crop_mask([image], box)[0] * 255 for image in (rest, wide))
    change = np.abs(shut - open_).max(axis=0)
    border = np.ones(change.shape, bool)
    border[MASK_ROWS[0]:MASK_ROWS[1], MASK_COLS[0]:MASK_COLS[1]] = False
    assert change[border].max() <= 2.0
    assert change[~border].max() > 100  # inside, the mouth opens


def test_synth_command_writes_video_audio_and_truth() -> None:
    video = synthetic_clip("moving")
    truth = np.load(video.with_name("truth.npz"))
    frames = read_frames(video)
    assert len(frames) == 75 and frames[0].shape == (512, 512, 3)
    for key in ("mouth_open", "mouth_open_px", "blink", "loudness"):
        assert truth[key].shape == (75,)
    assert truth["face_box"].shape == (75, 4) and truth["head"].shape == (75, 3)
    assert truth["mouth_open"].max() > 0.5 and truth["mouth_open"][:5].max() < 0.05
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].rate == 16000


def test_dlib_finds_the_face_where_the_truth_says() -> None:
    video = synthetic_clip("moving")
    truth = np.load(video.with_name("truth.npz"))
    detect = HogDetector()
    for i, frame in enumerate(read_frames(video)):
        boxes, _ = detect(frame)
        assert len(boxes) == 1, f"frame {i}: {len(boxes)} faces"
        centre = (boxes[0, :2] + boxes[0, 2:]) / 2
        expected = (truth["face_box"][i, :2] + truth["face_box"][i, 2:]) / 2
        width = truth["face_box"][i, 2] - truth["face_box"][i, 0]
        dx, dy = np.abs(centre - expected)
        assert dx < 0.1 * width and dy < 0.15 * width, f"frame {i}"  # an open jaw lowers the box


def test_audio_track_plays_in_step_with_the_frames() -> None:
    video = synthetic_clip("moving")
    truth = np.load(video.with_name("truth.npz"))
    audio = load_audio(video)
    n = len(truth["loudness"])
    rms = np.array([np.sqrt(np.mean(audio[i * 640:(i + 1) * 640] ** 2)) for i in range(n)])
    lags = {lag: np.corrcoef(rms[max(0, lag): n + min(0, lag)],
                             truth["loudness"][max(0, -lag): n - max(0, lag)])[0, 1]
            for lag in (-2, -1, 0, 1, 2)}
    assert max(lags, key=lags.get) == 0 and lags[0] > 0.95


def test_rendered_mouth_follows_the_truth() -> None:
    """The lip gap dlib sees (inner lip points 62-66; the default model's mouth is shaded,
    not a flat dark lens) follows the true opening."""
    from synctalk.avatar.landmarks import DlibLandmarker

    video = synthetic_clip("still")
    truth = np.load(video.with_name("truth.npz"))
    frames = read_frames(video)
    assert len(frames) == 60
    detect = DlibLandmarker()
    gaps = [float(np.linalg.norm(p[66] - p[62])) for p in (detect(f).landmarks[0] for f in frames)]
    assert np.corrcoef(gaps, truth["mouth_open_px"])[0, 1] > 0.9
    assert not truth["head"].any()


def test_legacy_rendered_mouth_follows_the_truth() -> None:
    video = synthetic_clip("still-jaw-drop")
    truth = np.load(video.with_name("truth.npz"))
    frames = read_frames(video)
    assert len(frames) == 60 and str(truth["head_model"]) == "jaw-drop/1"
    cx, cy = truth["mouth_centre"][0].round().astype(int)
    dark = [int((cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)[cy - 5: cy + 45, cx - 3: cx + 4].mean(axis=1) < 60).sum())
            for f in frames]
    assert np.corrcoef(dark, truth["mouth_open_px"])[0, 1] > 0.9
    assert not truth["head"].any()
