"""The training cache, the sync gate and all-or-nothing checkpoints on a full disk.

The cache must not change what training sees: for one seed its batches are the DataLoader's,
bit for bit (crops, masks, references, negatives, feature windows).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from synctalk.avatar.layout import syncnet_path, training_cache_dir, unet_epoch_path
from synctalk.cli import main
from synctalk.commands.train import summary_lines
from tests.support.training import (
    CPU,
    save_untrained_syncnet,
    synthetic_avatar,
    tiny,
    write_avatar_folder,
)
from training.cache import build_cache, frames_identity, open_cache
from training.cached_batches import DeviceCache, cached_loader
from training.checkpoints import (
    DiskFullError,
    atomic_save,
    load_checkpoint,
    save_unet_epoch,
)
from training.datasets import AvatarArrays, SyncPairs, UNetDataset, split_holdout
from training.distributed import DistContext
from training.loop import make_loader
from training.sync_gate import decide_sync_weight
from training.unet_train import UNetTrainer

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def bordered_avatar(n: int = 24) -> AvatarArrays:
    """The synthetic avatar with some boxes off the frame's edge and non-integer (smoothed)
    boxes, so the cache meets every branch of the crop kernel."""
    avatar = synthetic_avatar(n)
    boxes = avatar.boxes.copy()
    boxes[1] = (-10, -6, 60, 64)  # crosses the top-left corner: border pixels repeat
    boxes[2] = (50.4, 40.6, 110.2, 100.4)  # crosses the bottom-right, rounded to pixels
    boxes[3] = (20, 20, 21, 21)  # one pixel, upsampled
    return AvatarArrays(avatar.frames, boxes, avatar.features)


def assert_same_batches(loader: object, cached: object) -> int:
    count = 0
    for a, b in zip(loader, cached, strict=True):  # type: ignore[call-overload]
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert torch.equal(x, y)
        count += 1
    return count


@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2)])
def test_cached_batches_are_the_loaders_bit_for_bit(tmp_path: Path, rank: int,
                                                    world: int) -> None:
    avatar = bordered_avatar()
    build_cache(tmp_path, avatar)
    source = DeviceCache(open_cache(tmp_path, avatar), torch.device("cpu"))
    ctx = DistContext(rank=rank, world_size=world, local_rank=0, device=torch.device("cpu"))
    train, held = split_holdout(len(avatar), 0.25)
    datasets = [(UNetDataset(avatar, 3, None), 3, True),
                (SyncPairs(avatar, train, 5, 3), 4, True),
                (SyncPairs(avatar, held, 5, 3), 4, False)]
    for dataset, batch, shuffle in datasets:
        loader, sampler = make_loader(dataset, batch, ctx, seed=7, workers=0, shuffle=shuffle)
        cached, cached_sampler = cached_loader(dataset, source, batch, ctx, seed=7,
                                               shuffle=shuffle)
        assert len(cached) == len(loader)
        for epoch in range(2):
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)
            cached_sampler.set_epoch(epoch)
            assert assert_same_batches(loader, cached) == len(loader)
    inp = next(iter(cached_loader(datasets[0][0], source, 2, ctx, seed=7, shuffle=True)[0]))[0]
    assert inp.is_contiguous(memory_format=torch.channels_last)


def test_the_cache_is_reused_while_fresh_and_rebuilt_when_its_inputs_change(
    tmp_path: Path,
) -> None:
    avatar = synthetic_avatar(12)
    crops = training_cache_dir(tmp_path) / "crops.npy"
    build_cache(tmp_path, avatar)
    built = crops.stat().st_mtime_ns
    build_cache(tmp_path, avatar)
    build_cache(tmp_path, avatar.limit(5))  # fewer frames: served by the larger cache
    assert crops.stat().st_mtime_ns == built
    assert len(open_cache(tmp_path, avatar.limit(5))) == 5

    moved = avatar.boxes.copy()
    moved[4] += 2
    build_cache(tmp_path, AvatarArrays(avatar.frames, moved, avatar.features))
    assert crops.stat().st_mtime_ns != built
    rebuilt = crops.stat().st_mtime_ns

    frames = np.array(avatar.frames)
    frames[7, 50, 50] ^= 1
    assert frames_identity(frames) != frames_identity(avatar.frames)
    build_cache(tmp_path, AvatarArrays(frames, moved, avatar.features))
    assert crops.stat().st_mtime_ns != rebuilt
    assert not [p for p in training_cache_dir(tmp_path).iterdir() if ".tmp" in p.name]


def test_a_memory_mapped_frames_file_is_identified_by_its_file(tmp_path: Path) -> None:
    np.save(tmp_path / "frames.npy", np.asarray(synthetic_avatar(4).frames))
    mapped = np.load(tmp_path / "frames.npy", mmap_mode="r")
    first = frames_identity(mapped)
    assert first.startswith("npy:") and first == frames_identity(mapped)
    os.utime(tmp_path / "frames.npy", ns=(1, 1))
    assert frames_identity(np.load(tmp_path / "frames.npy", mmap_mode="r")) != first


def test_tiny_training_batches_from_the_cache(tmp_path: Path) -> None:
    syncnet = save_untrained_syncnet(tmp_path)
    trainer = UNetTrainer(tmp_path, synthetic_avatar(24), "ave", tiny(epochs=1, batch_size=2),
                          CPU, syncnet_checkpoint=syncnet)
    assert trainer.source is not None and not trainer.source.resident
    assert (training_cache_dir(tmp_path) / "meta.json").is_file()
    trainer.fit()
    assert len(trainer.history) == 1 and np.isfinite(trainer.history[0]["loss"])
    off = dataclasses.replace(tiny(epochs=1), cached_data=False)
    assert UNetTrainer(tmp_path, synthetic_avatar(24), "ave", off, CPU,
                       syncnet_checkpoint=syncnet).source is None


# ---------------------------------------------------------------- the sync gate


def syncnet_with_accuracy(avatar_dir: Path, accuracy: float | None) -> Path:
    path = save_untrained_syncnet(avatar_dir)
    state = load_checkpoint(path)
    state["metrics"] = {} if accuracy is None else {"heldout_accuracy": accuracy}
    atomic_save(state, path)
    return path


@pytest.mark.parametrize("accuracy,expected", [(0.8, 10.0), (0.65, 10.0), (0.55, 0.5),
                                               (None, 0.5)])
def test_the_sync_gate_weights_the_sync_loss_by_syncnet_accuracy(
    tmp_path: Path, accuracy: float | None, expected: float
) -> None:
    syncnet = syncnet_with_accuracy(tmp_path, accuracy)
    profile = tiny(epochs=1, sync_weight=10.0, sync_gate=0.65, sync_weight_below_gate=0.5)
    with capture_logs() as logs:
        trainer = UNetTrainer(tmp_path, synthetic_avatar(24), "ave", profile, CPU,
                              syncnet_checkpoint=syncnet)
    assert trainer.loss.weights.sync == expected
    gate = trainer.config()["sync_gate"]
    assert gate["weight"] == expected and gate["heldout_accuracy"] == accuracy
    warnings = [e for e in logs if e["event"] == "unet_sync_gate_closed"]
    assert gate["passed"] == (expected == 10.0) == (not warnings)
    if warnings:
        assert "instead of 10" in warnings[0]["reason"] and "0.65" in warnings[0]["reason"]


def test_the_gate_closed_turns_the_sync_term_off_by_default() -> None:
    decision = decide_sync_weight(10.0, 0.65, 0.0, 0.52)
    assert decision.weight == 0.0 and not decision.passed
    assert "0.520 is below the gate 0.650" in decision.reason
    assert decide_sync_weight(10.0, 0.0, 0.0, None).weight == 10.0  # threshold 0: no gate


def test_the_train_summary_names_syncnet_accuracy_and_the_weight_used() -> None:
    closed = decide_sync_weight(10.0, 0.65, 0.0, 0.55).to_dict()
    lines = summary_lines(0.55, closed)
    assert lines == ["syncnet held-out accuracy: 0.550 (0.5 is chance)",
                     "unet sync weight: 0 (profile 10; held-out accuracy below the gate 0.65)"]
    opened = decide_sync_weight(10.0, 0.65, 0.0, 0.9).to_dict()
    assert "unet sync weight: 10 (profile 10; held-out accuracy at or above" in \
        summary_lines(0.9, opened)[1]
    assert summary_lines(None, None) == ["syncnet held-out accuracy: not measured"]


# ---------------------------------------------------------------- a full disk


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs (root only; the test is skipped where mounting is not allowed)."""
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "fs", "1m") as mount:
        yield mount


def checkpoint_of(megabytes: float, epoch: int) -> dict[str, object]:
    weights = torch.full((int(megabytes * 2**18),), float(epoch))
    return {"format": "synctalk.train/1", "kind": "unet", "feature_mode": "ave",
            "epoch": epoch, "model": {"w": weights}}


def test_checkpoints_on_a_full_file_system_leave_nothing_partial(full_fs: Path) -> None:
    avatar = full_fs / "avatar"
    save_unet_epoch(avatar, checkpoint_of(0.2, 1), keep=0)
    with pytest.raises(DiskFullError, match="disk full") as info:
        save_unet_epoch(avatar, checkpoint_of(0.6, 2), keep=0)
    message = str(info.value)
    assert str(unet_epoch_path(avatar, "ave", 2)) in message and str(full_fs) in message
    assert info.value.errno == errno.ENOSPC
    names = sorted(p.name for p in (avatar / "checkpoints").iterdir())
    assert names == ["unet_ave.pt", "unet_ave_epoch001.pt"]  # no temp, no epoch 2
    assert load_checkpoint(unet_epoch_path(avatar, "ave", 1))["epoch"] == 1
    assert float(load_checkpoint(avatar / "checkpoints" / "unet_ave.pt")["model"]["w"][0]) == 1


def test_the_cache_on_a_full_file_system_leaves_nothing_partial(full_fs: Path) -> None:
    with pytest.raises(DiskFullError, match="disk full.*training cache"):
        build_cache(full_fs, synthetic_avatar(24))  # 7.7 MB of crops onto 1 MiB
    assert list(training_cache_dir(full_fs).iterdir()) == []


def test_train_stops_with_a_clear_error_when_checkpoints_fill_the_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16 MiB holds the tiny SyncNet, not a full-width U-Net checkpoint (about 150 MB)."""
    avatar_dir = write_avatar_folder(tmp_path / "avatar")
    with small_tmpfs(tmp_path / "fs", "16m") as disk:
        (avatar_dir / "checkpoints").symlink_to(disk)  # the checkpoints, on the small disk
        save_untrained_syncnet(avatar_dir)  # a finished SyncNet: only the U-Net trains
        syncnet = (disk / "syncnet_ave.pt").read_bytes()
        argv = ["train", str(avatar_dir), "--profile", "tiny", "--epochs", "1",
                "--device", "cpu", "--feature-mode", "ave"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "disk full" in err and str(disk) in err and "unet_ave_epoch001.pt" in err
        assert sorted(p.name for p in disk.iterdir()) == ["syncnet_ave.pt"]  # nothing partial
        assert (disk / "syncnet_ave.pt").read_bytes() == syncnet


def test_a_failed_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same guarantee where no tmpfs can be mounted: the writer's own write fails."""
    path = syncnet_path(tmp_path, "ave")
    atomic_save(checkpoint_of(0.01, 1), path)
    real_write = os.write
    calls = []

    def fail_second(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", fail_second)
    with pytest.raises(DiskFullError, match="disk full"):
        atomic_save(checkpoint_of(0.01, 2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]


# ---------------------------------------------------------------- GPU


@gpu
@needs_cuda
def test_the_device_cache_gives_the_host_caches_samples(tmp_path: Path) -> None:
    avatar = bordered_avatar()
    build_cache(tmp_path, avatar)
    cache = open_cache(tmp_path, avatar)
    cuda = DeviceCache(cache, torch.device("cuda"))
    assert cuda.resident
    host = DeviceCache(cache, torch.device("cpu"))
    dataset = UNetDataset(avatar, 3, None)
    on_gpu = cached_loader(dataset, cuda, 4, CPU, seed=1, shuffle=True)[0]
    on_host = cached_loader(dataset, host, 4, CPU, seed=1, shuffle=True)[0]
    for x, y in zip(on_gpu, on_host, strict=True):
        for s, t in zip(x, y, strict=True):
            assert s.is_cuda and torch.equal(s.cpu(), t)


@gpu
@needs_cuda
@pytest.mark.parametrize("amp_dtype,compile", [("bf16", False), ("fp16", False),
                                                ("bf16", True)])
def test_a_cuda_step_runs_with_autocast_fused_adam_and_compile(
    tmp_path: Path, amp_dtype: str, compile: bool
) -> None:
    cuda = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    syncnet = save_untrained_syncnet(tmp_path)
    profile = dataclasses.replace(tiny(epochs=1, batch_size=2), amp_dtype=amp_dtype,
                                  compile=compile)
    trainer = UNetTrainer(tmp_path, synthetic_avatar(24), "ave", profile, cuda,
                          syncnet_checkpoint=syncnet)
    assert trainer.source is not None and trainer.source.resident
    assert trainer.optimizer.defaults["fused"]
    assert trainer.scaler.is_enabled() == (trainer.amp_dtype == torch.float16)
    trainer.fit()
    assert np.isfinite(trainer.history[-1]["loss"])
