"""The avatar folder format, lazy frames, the ping-pong walk and the crop-box rule."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from synctalk.avatar import (
    AvatarMeta,
    JpegFrames,
    PingPong,
    list_avatars,
    load_avatar,
    open_frames,
    valid_avatar_name,
    write_meta,
)
from synctalk.avatar.boxes import crop_boxes, fill_missing, frame_ranges, raw_boxes


def write_jpeg_avatar(folder: Path, n: int = 5, complete: bool = True) -> Path:
    """A small prepared avatar as `synctalk prepare` lays it out: frame k is grey level 40k."""
    (folder / "frames").mkdir(parents=True)
    for k in range(n):
        cv2.imwrite(str(folder / "frames" / f"{k:06d}.jpg"), np.full((48, 64, 3), 40 * k, np.uint8))
    np.save(folder / "boxes.npy", np.tile(np.array([[8, 4, 40, 36]], np.int32), (n, 1)))
    write_meta(folder, AvatarMeta(name=folder.name, width=64, height=48, num_frames=n, complete=complete))
    return folder


def test_ping_pong_walks_forward_then_back() -> None:
    walk = PingPong(4)
    assert [walk.index(i) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [PingPong(4, start=2).index(i) for i in range(6)] == [2, 3, 2, 1, 0, 1]
    assert [PingPong(1).index(i) for i in range(3)] == [0, 0, 0]
    assert [PingPong(2).index(i) for i in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ValueError):
        PingPong(0)
    with pytest.raises(ValueError):
        PingPong(3, start=3)


@pytest.mark.parametrize("name", ["alice", "Bob_2", "a-b.c", "x" * 64, "0"])
def test_valid_names(name: str) -> None:
    assert valid_avatar_name(name)


@pytest.mark.parametrize("name", ["", "..", ".", ".hidden", "a/b", "../x", "a\\b", "nul\0", "x" * 65,
                                  "sp ace", "é", "a:b"])
def test_invalid_names(name: str) -> None:
    assert not valid_avatar_name(name)


def test_load_avatar_reads_a_prepared_folder(tmp_path: Path) -> None:
    avatar = load_avatar(write_jpeg_avatar(tmp_path / "alice"))
    assert (avatar.name, avatar.fps, avatar.width, avatar.height, avatar.num_frames) == ("alice", 25, 64, 48, 5)
    assert avatar.boxes.dtype == np.int32 and avatar.boxes.shape == (5, 4)
    assert len(avatar.frames) == 5
    assert abs(int(avatar.frames[3][10, 10, 0]) - 120) <= 2 and avatar.frames[-1].shape == (48, 64, 3)
    assert avatar.still().shape == (48, 64, 3)
    assert avatar.feature_modes() == []
    (tmp_path / "alice" / "checkpoints").mkdir()
    for name in ("unet_ave.pt", "unet_whisper.pt", "unet_ave_epoch003.pt", "syncnet_ave.pt"):
        (tmp_path / "alice" / "checkpoints" / name).write_bytes(b"")
    assert avatar.feature_modes() == ["ave", "whisper"]
    assert avatar.unet_checkpoint("ave") == tmp_path / "alice" / "checkpoints" / "unet_ave.pt"


def test_load_avatar_reads_a_frames_array(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    np.save(folder / "frames.npy", np.zeros((3, 32, 40, 3), np.uint8))
    np.save(folder / "boxes.npy", np.zeros((3, 4), np.int32) + [0, 0, 16, 16])
    avatar = load_avatar(folder)
    assert (avatar.name, avatar.num_frames, avatar.width, avatar.height) == ("tiny", 3, 40, 32)
    assert avatar.frames[2].shape == (32, 40, 3)


def _edit_meta(folder: Path, **changes: object) -> None:
    path = folder / "avatar.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("damage", "error", "message"), [
    (lambda f: None, FileNotFoundError, "does not exist"),
    (lambda f: (f / "avatar.json").unlink(), FileNotFoundError, "no avatar.json"),
    (lambda f: _edit_meta(f, complete=False), ValueError, "did not finish"),
    (lambda f: _edit_meta(f, format="other/2"), ValueError, "format 'other/2'"),
    (lambda f: _edit_meta(f, num_frames=0), ValueError, "positive integer"),
    (lambda f: _edit_meta(f, frames="../elsewhere"), ValueError, "bad frames folder"),
    (lambda f: (f / "avatar.json").write_text("{not json"), ValueError, "not readable JSON"),
    (lambda f: (f / "boxes.npy").unlink(), FileNotFoundError, "crop boxes missing"),
    (lambda f: np.save(f / "boxes.npy", np.zeros((4, 4), np.int32)), ValueError, "4 boxes for 5 frames"),
    (lambda f: np.save(f / "boxes.npy", np.zeros((5, 4), np.int32)), ValueError, "empty boxes"),
    (lambda f: (f / "frames" / "000004.jpg").unlink(), FileNotFoundError, "000004.jpg is missing"),
])
def test_load_avatar_errors_say_what_is_wrong(tmp_path: Path, damage, error: type, message: str) -> None:
    folder = write_jpeg_avatar(tmp_path / "bob")
    target = folder
    if message == "does not exist":
        target = tmp_path / "nobody"
    damage(folder)
    with pytest.raises(error, match=message):
        load_avatar(target)


def test_list_avatars_lists_complete_ones_only(tmp_path: Path) -> None:
    write_jpeg_avatar(tmp_path / "b")
    write_jpeg_avatar(tmp_path / "a")
    write_jpeg_avatar(tmp_path / "half", complete=False)
    write_jpeg_avatar(tmp_path / ".hidden")
    (tmp_path / "empty").mkdir()
    assert list_avatars(tmp_path) == ["a", "b"]
    assert list_avatars(tmp_path / "missing") == []


def test_jpeg_frames_are_lazy_and_cached(tmp_path: Path) -> None:
    folder = write_jpeg_avatar(tmp_path / "c") / "frames"
    frames = JpegFrames(folder, 5, cache_frames=2)
    first = frames[0]
    assert frames[0] is first  # served from the cache
    frames[1], frames[2]  # noqa: B018 - pushes frame 0 out of the 2-frame cache
    assert frames[0] is not first and np.array_equal(frames[0], first)
    assert not first.flags.writeable
    assert [f[0, 0, 0] // 40 for f in frames[1:4]] == [1, 2, 3]
    with pytest.raises(IndexError):
        frames[5]
    (folder / "000004.jpg").write_bytes(b"broken")
    with pytest.raises(OSError, match="000004.jpg"):
        frames[4]
    assert len(open_frames(folder.parent)) == 5


def _face_landmarks(n: int, cx: float = 100.0, top: float = 80.0, width: float = 60.0) -> np.ndarray:
    """Landmarks with the points the crop rule reads: jaw 0/1 and 15/16, nose bridge 29."""
    lm = np.zeros((n, 68, 2), np.float32)
    lm[:, 0] = [cx - width / 2 - 1, top - 10]
    lm[:, 1] = [cx - width / 2 + 1, top - 2]
    lm[:, 15] = [cx + width / 2 - 1, top - 2]
    lm[:, 16] = [cx + width / 2 + 1, top - 10]
    lm[:, 29] = [cx, top]
    return lm


def test_crop_rule_spans_cheek_to_cheek_from_mid_nose() -> None:
    params = raw_boxes(_face_landmarks(1))
    assert np.allclose(params[0], [100, 80, 60])
    box = crop_boxes(_face_landmarks(3), smooth=False)[0]
    assert box.tolist() == [70, 80, 130, 140]


def test_smoothing_keeps_a_jittering_still_head_within_2_px() -> None:
    # dlib's points wobble by about a pixel on a still face.
    for seed in range(5):
        rng = np.random.default_rng(seed)
        lm = _face_landmarks(250, width=180) + rng.normal(0, 1.0, (250, 68, 2)).astype(np.float32)
        raw = crop_boxes(lm, smooth=False)
        smooth = crop_boxes(lm)
        assert np.abs(np.diff(raw, axis=0)).max() >= 3
        assert np.abs(np.diff(smooth, axis=0)).max() < 2
        assert ((smooth[:, 2] - smooth[:, 0]) == (smooth[:, 3] - smooth[:, 1])).all()


def test_smoothing_follows_a_moving_head_without_lag() -> None:
    x = 100 + 40 * np.sin(np.arange(100) / 100 * 2 * np.pi)  # one slow sweep over 4 s
    lm = np.concatenate([_face_landmarks(1, cx=c) for c in x])
    centre = crop_boxes(lm)[:, [0, 2]].mean(axis=1)
    assert np.abs(centre - x).max() < 1.5


def test_missing_faces_are_interpolated_and_named_as_ranges() -> None:
    lm = _face_landmarks(5)
    lm[:, :, 0] += np.arange(5)[:, None] * 10
    found = np.array([True, False, False, True, True])
    filled = fill_missing(np.where(found[:, None, None], lm, 0), found)
    assert np.allclose(filled, lm)
    with pytest.raises(ValueError):
        fill_missing(lm, np.zeros(5, bool))
    assert frame_ranges(np.array([3, 4, 5, 9, 11, 12])) == "3-5, 9, 11-12"
    assert frame_ranges(np.array([], int)) == ""
