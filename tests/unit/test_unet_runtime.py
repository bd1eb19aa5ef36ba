"""U-Net runners (torch, ONNX Runtime fp32/int8), the ONNX cache, export and the export command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from synctalk.commands import export as export_command
from synctalk.config import ModelsConfig
from synctalk.models.audio_encoder import seeded_audio_encoder
from synctalk.models.int8 import (
    INT8_MAX_MEAN_ABS_DIFF,
    Calibration,
    avatar_calibration,
    mean_abs_diff_grey,
)
from synctalk.models.onnx_cache import cache_path
from synctalk.models.onnx_export import (
    audio_encoder_onnx_bytes,
    export_unet,
    read_metadata,
    unet_onnx_bytes,
)
from synctalk.models.runner_factory import build_unet_runner
from synctalk.models.runners import OrtUNetRunner, TorchUNetRunner, UNetRunner, ort_session
from synctalk.models.unet import UNet328

CPU_ORT = ModelsConfig(device="cpu", backend="onnxruntime", warmup=False, threads=1)
CPU_TORCH = ModelsConfig(device="cpu", backend="torch", warmup=False, threads=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def inputs(batch: int, mode: str = "ave", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio_shape = (32, 16, 16) if mode == "ave" else (32, 16, 24)
    return (rng.random((batch, 6, 320, 320), np.float32),
            rng.random((batch, *audio_shape), np.float32))


def calibrated(model: UNet328, batches: int = 2) -> UNet328:
    """BatchNorm statistics measured on inputs like the ones the test feeds, as training
    leaves them: activations keep their scale through the layers (fresh BN would shrink
    them towards denormals and make any comparison meaningless)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for b in range(batches):
            model(*(torch.from_numpy(x) for x in inputs(2, model.audio_mode, 100 + b)))
    return model.eval()


def save_checkpoint(path: Path, model: UNet328) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "synctalk.train/1", "kind": "unet", "model": model.state_dict(),
                "feature_mode": model.audio_mode, "config": {"unet": model.describe()}}, path)
    return path


def test_onnxruntime_matches_torch_full_width() -> None:
    torch.manual_seed(0)
    model = calibrated(UNet328("ave", 1.0), batches=1)
    ort_runner = OrtUNetRunner(unet_onnx_bytes(model), model.audio_shape, threads=1)
    torch_runner = TorchUNetRunner(model)
    for batch in (1, 2):
        image, audio = inputs(batch, seed=batch)
        expected = torch_runner(image, audio)
        got = ort_runner(image, audio)
        assert got.shape == (batch, 3, 320, 320) and got.dtype == np.float32
        assert float(np.abs(got - expected).max()) < 1e-4
        assert float(expected.std()) > 0.01  # a real image-like output, not a constant


def test_runners_check_shapes() -> None:
    runner = TorchUNetRunner(UNet328("whisper", 0.125))
    assert isinstance(runner, UNetRunner)
    image, audio = inputs(1, "ave")
    with pytest.raises(ValueError, match="audio: expected"):
        runner(image, audio)
    with pytest.raises(ValueError, match="image: expected"):
        runner(image[:, :3], inputs(1, "whisper")[1])
    with pytest.raises(ValueError, match="batch mismatch"):
        runner(np.concatenate([image, image]), inputs(1, "whisper")[1])


def test_build_runner_torch_and_cached_onnx(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = calibrated(UNet328("whisper", 0.125))
    checkpoint = save_checkpoint(tmp_path / "unet_whisper.pt", model)
    image, audio = inputs(2, "whisper")
    with torch.inference_mode():
        expected = model(torch.from_numpy(image), torch.from_numpy(audio)).numpy()

    eager = build_unet_runner(checkpoint, CPU_TORCH)
    assert (eager.backend, eager.precision, eager.audio_shape) == ("torch", "fp32", (32, 16, 24))
    np.testing.assert_allclose(eager(image, audio), expected, atol=1e-6)

    ort_runner = build_unet_runner(checkpoint, CPU_ORT, precision="fp32")
    assert (ort_runner.backend, ort_runner.precision) == ("onnxruntime", "fp32")
    assert float(np.abs(ort_runner(image, audio) - expected).max()) < 1e-4
    cached = cache_path(checkpoint, "fp32")
    meta = read_metadata(cached.read_bytes())
    assert (meta["synctalk.audio_mode"], meta["synctalk.width"]) == ("whisper", "0.125")

    # A second build reads the cache (same file, untouched); a rewritten checkpoint refreshes it.
    stamp = cached.stat().st_mtime_ns
    build_unet_runner(checkpoint, CPU_ORT, precision="fp32")
    assert cached.stat().st_mtime_ns == stamp
    torch.manual_seed(3)
    save_checkpoint(checkpoint, calibrated(UNet328("whisper", 0.125)))
    os.utime(checkpoint, ns=(stamp + 10**9, stamp + 10**9))
    refreshed = build_unet_runner(checkpoint, CPU_ORT, precision="fp32")
    assert read_metadata(cached.read_bytes())["synctalk.source"] != meta["synctalk.source"]
    assert float(np.abs(refreshed(image, audio) - expected).max()) > 1e-3


def test_int8_without_calibration_data_stays_fp32(tmp_path: Path) -> None:
    checkpoint = save_checkpoint(tmp_path / "unet_ave.pt", UNet328("ave", 0.125))
    runner = build_unet_runner(checkpoint, CPU_ORT, precision="int8")
    assert runner.precision == "fp32"


def tiny_avatar(avatar: Path, n: int = 12) -> None:
    """Frames (a face-like ellipse whose mouth follows the audio), boxes and features."""
    import cv2

    rng = np.random.default_rng(0)
    frames = np.empty((n, 200, 200, 3), np.uint8)
    opening = rng.uniform(0, 1, n)
    for i in range(n):
        frames[i] = (60, 90, 140)
        cv2.ellipse(frames[i], (100, 90), (70, 90), 0, 0, 360, (120, 160, 210), -1)
        cv2.ellipse(frames[i], (100, 140), (30, int(3 + 20 * opening[i])), 0, 0, 360,
                    (40, 20, 120), -1)
    avatar.mkdir(parents=True)
    np.save(avatar / "frames.npy", frames)
    np.save(avatar / "boxes.npy", np.tile(np.array([30, 60, 170, 200], np.int32), (n, 1)))
    pattern = rng.random((32, 16, 16), np.float32)
    np.save(avatar / "features_ave.npy", (opening[:, None, None, None] * pattern).astype(
        np.float32))


def avatar_unet(checkpoint: Path, calibration: Calibration, output_gain: float) -> UNet328:
    """A tiny U-Net with BN statistics from the avatar's crops (as training leaves them),
    its output conv scaled by `output_gain`, saved as the avatar's checkpoint."""
    torch.manual_seed(4)
    model = UNet328("ave", 0.125)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(calibration.fit_image), torch.from_numpy(calibration.fit_audio))
        model.outc.conv.weight.mul_(output_gain)
    save_checkpoint(checkpoint, model.eval())
    return model


def test_avatar_calibration_reads_crops_and_features(tmp_path: Path) -> None:
    avatar = tmp_path / "anna"
    tiny_avatar(avatar)
    calibration = avatar_calibration(avatar / "checkpoints" / "unet_ave.pt", "ave")
    assert calibration is not None
    assert calibration.fit_image.shape[1:] == (6, 320, 320)
    assert len(calibration.fit_image) + len(calibration.check_image) == 12
    assert calibration.check_audio.shape[1:] == (32, 16, 16)
    assert float(calibration.fit_image[:, 3:, 100:200, 100:200].max()) == 0.0  # masked half
    assert float(calibration.fit_image[:, :3, 100:200, 100:200].max()) > 0.3
    assert avatar_calibration(tmp_path / "elsewhere" / "checkpoints" / "u.pt", "ave") is None


def test_int8_that_misses_the_bound_is_not_used(tmp_path: Path) -> None:
    # An untrained net amplifies 8-bit rounding through every layer: far over 1 grey level.
    avatar = tmp_path / "anna"
    tiny_avatar(avatar)
    checkpoint = avatar / "checkpoints" / "unet_ave.pt"
    avatar_unet(checkpoint, avatar_calibration(checkpoint, "ave"), output_gain=1.0)
    runner = build_unet_runner(checkpoint, CPU_ORT, precision="int8")
    assert runner.precision == "fp32"
    meta = read_metadata(cache_path(checkpoint, "int8").read_bytes())
    assert meta["synctalk.int8_accepted"] == "0"
    assert meta["synctalk.int8_recipe"] == "fp32-edges"  # both recipes were tried
    assert float(meta["synctalk.int8_mean_abs_diff"]) > INT8_MAX_MEAN_ABS_DIFF
    stamp = cache_path(checkpoint, "int8").stat().st_mtime_ns
    assert build_unet_runner(checkpoint, CPU_ORT, precision="int8").precision == "fp32"
    assert cache_path(checkpoint, "int8").stat().st_mtime_ns == stamp  # verdict reused


def test_int8_within_the_bound_is_used(tmp_path: Path) -> None:
    # A damped output conv makes the output insensitive to rounding: int8 passes.
    avatar = tmp_path / "anna"
    tiny_avatar(avatar)
    checkpoint = avatar / "checkpoints" / "unet_ave.pt"
    calibration = avatar_calibration(checkpoint, "ave")
    assert calibration is not None
    avatar_unet(checkpoint, calibration, output_gain=0.02)
    runner = build_unet_runner(checkpoint, CPU_ORT, precision="int8")
    assert (runner.backend, runner.precision) == ("onnxruntime", "int8")
    meta = read_metadata(cache_path(checkpoint, "int8").read_bytes())
    assert (meta["synctalk.int8_accepted"], meta["synctalk.int8_recipe"]) == ("1", "full")
    assert meta["synctalk.int8_check_frames"] == str(len(calibration.check_image))
    fp32 = build_unet_runner(checkpoint, CPU_ORT, precision="fp32")
    image, audio = calibration.check_image, calibration.check_audio
    got, want = runner(image, audio), fp32(image, audio)
    assert 0.0 < mean_abs_diff_grey(got, want) <= INT8_MAX_MEAN_ABS_DIFF  # really int8


def test_calibration_split_keeps_check_frames_apart() -> None:
    image, audio = inputs(10)
    split = Calibration.split(image, audio, check=3)
    assert len(split.fit_image) == 7 and len(split.check_image) == 3
    fit = {a.tobytes() for a in split.fit_audio}
    assert not any(a.tobytes() in fit for a in split.check_audio)


def test_export_unet_file_and_audio_encoder(tmp_path: Path) -> None:
    model = calibrated(UNet328("ave", 0.125))
    path = export_unet(model, tmp_path / "unet.onnx")
    image, audio = inputs(3)
    with torch.inference_mode():
        expected = model(torch.from_numpy(image), torch.from_numpy(audio)).numpy()
    got = OrtUNetRunner(path.read_bytes(), model.audio_shape, threads=1)(image, audio)
    assert float(np.abs(got - expected).max()) < 1e-4

    encoder = seeded_audio_encoder()
    session = ort_session(audio_encoder_onnx_bytes(encoder), threads=1)
    mel = np.random.default_rng(1).uniform(-4, 4, (5, 1, 80, 16)).astype(np.float32)
    with torch.inference_mode():
        want = encoder(torch.from_numpy(mel)).numpy()
    features = session.run(None, {"mel": mel})[0]
    assert features.shape == (5, 512)
    assert float(np.abs(features - want).max()) < 1e-3


def run_export(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    export_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", *argv])
    return args.func(args)


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCTALK_MODELS__AVATARS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("SYNCTALK_MODELS__AVE_CHECKPOINT", "")
    avatar = tmp_path / "store" / "bob"
    save_checkpoint(avatar / "checkpoints" / "unet_ave.pt", calibrated(UNet328("ave", 0.125)))
    encoder = tmp_path / "audio_visual_encoder.pth"
    torch.save({k.removeprefix("audio_encoder."): v
                for k, v in seeded_audio_encoder().state_dict().items()}, encoder)

    assert run_export("--name", "bob", "--out", str(tmp_path / "out"),
                      "--encoder", str(encoder), "--int8") == 0
    printed = capsys.readouterr().out
    assert "int8    not built: no calibration data" in printed  # bob has no frames
    assert (tmp_path / "out" / "unet_ave.onnx").is_file()
    assert (tmp_path / "out" / "audio_encoder.onnx").is_file()
    diff = float(printed.split("max |onnxruntime - torch| = ")[1].split()[0])
    assert diff < 1e-4

    assert run_export("--name", "nobody") == 2
    assert "no avatar 'nobody'" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert run_export("--checkpoint", str(bad)) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err
