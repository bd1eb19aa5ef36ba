"""Avatar preparation on synthetic talking-head clips and on broken inputs built with PyAV."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from synctalk.audio.decode import load_audio
from synctalk.avatar import PrepareError, load_avatar, prepare_avatar
from synctalk.avatar.landmarks import DlibLandmarker, FaceResult, OnnxLandmarker
from synctalk.avatar.layout import PREPARE_STATE_DIR
from synctalk.avatar.video import frames_at_25fps, probe
from synctalk.commands.prepare import prepare
from synctalk.config import Settings, load_settings
from tests.support.clips import read_frames, synthetic_clip
from training.synthetic.writer import write_mp4


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="module")
def still_avatar(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    out = tmp_path_factory.mktemp("avatars") / "still"
    assert prepare("still", synthetic_clip("still"), out, settings, features=False, progress=False) == 0
    return out


def clip_audio(seconds: float) -> np.ndarray:
    return load_audio(synthetic_clip("still"))[: int(seconds * 16000)]


def test_prepared_avatar_has_every_file_and_finds_the_face(still_avatar: Path) -> None:
    meta = json.loads((still_avatar / "avatar.json").read_text())
    assert meta["format"] == "synctalk.avatar/1" and meta["complete"] is True
    assert (meta["num_frames"], meta["width"], meta["height"], meta["fps"]) == (60, 512, 512, 25)
    assert meta["frames_without_face"] + meta["frames_with_several_faces"] <= 0.01 * 60
    assert not (still_avatar / PREPARE_STATE_DIR).exists()
    assert sorted(p.name for p in (still_avatar / "frames").iterdir())[-1] == "000059.jpg"
    landmarks = np.load(still_avatar / "landmarks.npy")
    assert landmarks.shape == (60, 68, 2) and landmarks.dtype == np.float32
    audio, rate = sf.read(still_avatar / "audio.wav", dtype="int16")
    assert rate == 16000 and audio.ndim == 1 and audio.size == 60 * 640
    source = load_audio(synthetic_clip("still"))[: 60 * 640]
    assert np.abs(audio / 32768.0 - source).max() < 1e-3


def test_still_head_gives_steady_square_boxes_around_the_mouth(still_avatar: Path) -> None:
    boxes = np.load(still_avatar / "boxes.npy")
    assert boxes.dtype == np.int32 and boxes.shape == (60, 4)
    assert ((boxes[:, 2] - boxes[:, 0]) == (boxes[:, 3] - boxes[:, 1])).all()
    assert np.abs(np.diff(boxes, axis=0)).max() < 2
    truth = np.load(synthetic_clip("still").with_name("truth.npz"))
    mx, my = truth["mouth_centre"][0]
    x0, y0, x1, y1 = boxes[0]
    assert x0 < mx < x1 and y0 < my - 20 and my + truth["max_open_px"] < y1  # mouth and open jaw inside
    side = x1 - x0
    assert 0.8 < side / (truth["face_box"][0, 2] - truth["face_box"][0, 0]) < 1.3


def test_avatar_loads_and_its_frames_are_the_video(still_avatar: Path) -> None:
    avatar = load_avatar(still_avatar)
    assert avatar.name == "still" and avatar.num_frames == len(avatar.frames) == 60
    video = read_frames(synthetic_clip("still"))
    for i in (0, 31, 59):
        diff = np.abs(avatar.frames[i].astype(int) - video[i].astype(int)).mean()
        assert diff < 3, f"frame {i}"


def test_moving_head_is_followed_by_the_boxes(tmp_path: Path, settings: Settings) -> None:
    video = synthetic_clip("moving")
    prepare_avatar(tmp_path / "moving", settings, video, progress=False)
    boxes = np.load(tmp_path / "moving" / "boxes.npy").astype(float)
    head = np.load(video.with_name("truth.npz"))["head"]
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    assert np.corrcoef(centre_x, head[:, 0])[0, 1] > 0.7
    assert np.abs(np.diff(boxes, axis=0)).max() <= 3


def test_rerun_skips_and_a_different_video_needs_force(still_avatar: Path, settings: Settings,
                                                        tmp_path: Path) -> None:
    before = {p: (still_avatar / p).stat().st_mtime_ns for p in ("avatar.json", "boxes.npy", "audio.wav")}

    class Refuse:
        name = "refuse"

        def __call__(self, frame: np.ndarray) -> FaceResult:
            raise AssertionError("a complete avatar must not be detected again")

    prepare_avatar(still_avatar, settings, synthetic_clip("still"), landmarker=Refuse())
    assert {p: (still_avatar / p).stat().st_mtime_ns for p in before} == before
    other = tmp_path / "other.mp4"
    other.write_bytes(synthetic_clip("still").read_bytes())
    with pytest.raises(PrepareError, match="--force"):
        prepare_avatar(still_avatar, settings, other)


class Interrupting:
    """The real dlib landmarker, interrupted (as by Ctrl-C) after `stop_after` frames; counts calls."""

    name = "dlib-68"

    def __init__(self, stop_after: int | None = None) -> None:
        self.inner = DlibLandmarker()
        self.stop_after = stop_after
        self.calls = 0
        self.detect = self.inner.detect  # the face tracker's state is saved with the progress

    def __call__(self, frame: np.ndarray) -> FaceResult:
        if self.stop_after is not None and self.calls == self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner(frame)


def test_interrupted_run_resumes_where_it_stopped(tmp_path: Path, settings: Settings,
                                                 still_avatar: Path) -> None:
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prepare_avatar(out, settings, synthetic_clip("still"), progress=False,
                       landmarker=Interrupting(stop_after=25))
    assert not (out / "avatar.json").exists()
    assert (out / PREPARE_STATE_DIR / "frames.json").is_file() and (out / "audio.wav").is_file()
    frames_mtime = (out / "frames" / "000000.jpg").stat().st_mtime_ns
    second = Interrupting()
    prepare_avatar(out, settings, progress=False, landmarker=second)  # the source is remembered
    assert second.calls == 60 - 25
    assert (out / "frames" / "000000.jpg").stat().st_mtime_ns == frames_mtime
    assert json.loads((out / "avatar.json").read_text())["complete"] is True
    assert np.array_equal(np.load(out / "boxes.npy"), np.load(still_avatar / "boxes.npy"))


def _bad_input(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.mp4"
    frames = read_frames(synthetic_clip("still"))
    audio = clip_audio(2.4)
    if kind == "no_audio":
        write_mp4(path, frames, None, 16000)
    elif kind == "audio_only":
        path = folder / "audio_only.m4a"
        write_mp4(path, [], audio, 16000)
    elif kind == "too_short":
        write_mp4(path, frames[:25], audio[:16000], 16000)
    elif kind == "no_face":
        write_mp4(path, [np.full((256, 256, 3), (90, 140, 200), np.uint8)] * 60, audio, 16000)
    elif kind == "two_faces":
        write_mp4(path, [np.hstack([f, f]) for f in frames], audio, 16000)
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("no_audio", "no audio track"),
    ("audio_only", "no video stream"),
    ("too_short", "shorter than the minimum 2 s"),
    ("no_face", "no face in "),
    ("two_faces", "more than one face in "),
    ("garbage", "not a readable video"),
    ("missing", "no such file"),
])
def test_bad_input_is_refused_with_a_clear_message(kind: str, message: str, tmp_path: Path,
                                                   settings: Settings,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    video = _bad_input(kind, tmp_path)
    out = tmp_path / "avatar"
    assert prepare("avatar", video, out, settings, features=False, progress=False) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("synctalk prepare: ")]
    assert len(errors) == 1 and message in errors[0], err
    assert not (out / "avatar.json").exists()
    if kind in ("no_face", "two_faces"):
        assert "frames (0-" in err  # the frames are named as ranges


def test_bad_names_are_refused(tmp_path: Path, settings: Settings,
                               capsys: pytest.CaptureFixture[str]) -> None:
    video = synthetic_clip("still")
    assert prepare("x", video, tmp_path / ".hidden", settings, features=False) == 2
    assert "invalid avatar folder name '.hidden'" in capsys.readouterr().err
    for name in ("../escape", "a/b", "", "bad\0name"):
        assert prepare(name, video, None, settings, features=False) == 2
        assert "invalid avatar name" in capsys.readouterr().err
    assert not (tmp_path / ".hidden" / "avatar.json").exists()


def test_command_line_prepares_dataset_name_with_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from synctalk.commands import prepare as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYNCTALK_MODELS__AVATARS_DIR", str(tmp_path / "store"))
    args = parser.parse_args(["prepare", "nobody", "--quiet"])
    assert args.func(args) == 2
    assert "dataset/nobody/nobody.mp4" in capsys.readouterr().err

    (tmp_path / "dataset" / "talk").mkdir(parents=True)
    (tmp_path / "dataset" / "talk" / "talk.mp4").write_bytes(synthetic_clip("still").read_bytes())
    args = parser.parse_args(["prepare", "talk", "--quiet"])
    assert args.func(args) == 0
    avatar = load_avatar(tmp_path / "store" / "talk")
    assert avatar.num_frames == 60
    # New avatars get the training default, whisper (models.train_feature_mode).
    assert np.load(tmp_path / "store" / "talk" / "features_whisper.npy").shape == (60, 32, 16, 24)
    assert not (tmp_path / "store" / "talk" / "features_ave.npy").exists()
    assert "features:" in capsys.readouterr().out


def _step(count: int) -> int:
    return 250 // count


def _write_counter_video(path: Path, fps: int, count: int, rotation: int = 0) -> None:
    """Frame k is a flat grey of level step x k (64x48), so the decoded frame tells its index."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        if rotation:
            stream.set_display_rotation(rotation)
        for k in range(count):
            image = np.full((48, 64, 3), _step(count) * k, np.uint8)
            image[:8, :8] = 255  # a mark in the top-left corner shows the orientation
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("fps", [30, 10, 50])
def test_any_frame_rate_becomes_25_fps_by_nearest_frame(fps: int, tmp_path: Path) -> None:
    path = tmp_path / f"count{fps}.mp4"
    count = 2 * fps  # two seconds
    _write_counter_video(path, fps, count)
    out = list(frames_at_25fps(path))
    assert len(out) == 50
    for i, image in out:
        shown = round(float(image[20:, 20:].mean()) / _step(count))
        nearest = min(range(count), key=lambda k: (abs(k / fps - i / 25), k))
        assert shown == nearest, f"output {i}: source {shown}, expected {nearest}"


def test_rotated_video_comes_out_upright(tmp_path: Path) -> None:
    path = tmp_path / "rotated.mp4"
    _write_counter_video(path, 25, 3, rotation=90)
    assert probe(path).width == 48 and probe(path).height == 64
    _, image = next(iter(frames_at_25fps(path)))
    assert image.shape == (64, 48, 3)
    # 90 degrees counter-clockwise: the top-left mark moves to the bottom-left.
    assert image[-8:, :8].mean() > 250 and image[:8, :8].mean() < 100


def test_late_audio_is_shifted_to_start_with_the_video(tmp_path: Path) -> None:
    from synctalk.avatar.prepare import _load_audio

    path = tmp_path / "late.mp4"
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono")
        for k in range(75):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="bgr24")
            frame.pts = k
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        pcm = (tone * 32767).astype(np.int16)
        for start in range(0, pcm.size, 1024):
            chunk = av.AudioFrame.from_ndarray(pcm[None, start:start + 1024].copy(), format="s16",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = 16000, 8000 + start  # starts 0.5 s after the video
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    info = probe(path)
    assert 0.4 < info.audio_offset <= 0.5  # the AAC encoder's priming samples come first
    samples = _load_audio(path, info)
    onset = int(np.argmax(np.abs(samples) > 0.1))
    assert abs(onset - 8000) < 160


def test_onnx_landmark_model_maps_crop_points_to_the_frame(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # A real (tiny) ONNX model: every landmark at the centre of its input crop.
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("points", TensorProto.FLOAT, [1, 136])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["z", "half"], ["points"]),
    ]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("half", TensorProto.FLOAT, [1, 136], [0.5] * 136)]
    graph = helper.make_graph(nodes, "centre", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "centre.onnx"
    onnx.save(model, path)

    frame = read_frames(synthetic_clip("still"))[0]
    result = OnnxLandmarker(path)(frame)
    assert result.count == 1 and result.landmarks.shape == (1, 68, 2)
    centre = (result.boxes[0, :2] + result.boxes[0, 2:]) / 2
    assert np.allclose(result.landmarks[0], centre, atol=1.0)
    with pytest.raises(FileNotFoundError):
        OnnxLandmarker(tmp_path / "none.onnx")

