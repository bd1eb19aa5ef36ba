"""Training on the CPU with the `tiny` profile: real U-Net, real SyncNet layout, real crops.

A synthetic avatar (a face whose mouth opening is drawn from the same random number that
scales its audio features) gives SyncNet something real to learn and keeps every step cheap.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from synctalk.avatar.layout import epoch_checkpoints, syncnet_path, unet_epoch_path, unet_path
from synctalk.cli import main
from synctalk.models.syncnet import sync_bce
from tests.support.paths import ROOT
from tests.support.training import (
    CPU,
    save_untrained_syncnet,
    synthetic_avatar,
    tiny,
    write_avatar_folder,
)
from training.checkpoints import load_checkpoint
from training.datasets import AvatarArrays, SyncPairs, UNetDataset, split_holdout
from training.losses import LossWeights, UNetLoss, VGG19Features, load_vgg19, ssim
from training.metrics import read_scalars
from training.profiles import get_profile
from training.syncnet_train import SyncNetTrainer, train_syncnet
from training.unet_train import UNetTrainer, train_unet

# ---------------------------------------------------------------- datasets


def test_unet_samples_pair_a_masked_target_with_another_frames_reference() -> None:
    avatar = synthetic_avatar(6)
    ds = UNetDataset(avatar, seed=3, crop=None)
    inp, target, audio = ds[2]
    assert inp.shape == (6, 320, 320) and target.shape == (3, 320, 320)
    assert audio.shape == (32, 16, 16)
    assert torch.equal(audio, torch.from_numpy(avatar.features[2]))
    ref = ds.reference_index(2)
    assert ref != 2
    ref_crop = ds.crops([ref])[0]
    assert torch.equal(inp[:3], torch.from_numpy(ref_crop[:3]))
    assert torch.equal(inp[3:], torch.from_numpy(ds.crops([2])[0, 3:]))
    assert float(inp[3:, 100:200, 100:200].abs().max()) == 0.0  # the masked inside
    assert float(target[:, 100:200, 100:200].max()) > 0.0
    refs = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        refs.add(ds.reference_index(2))
    assert len(refs) > 1  # a new reference draw each epoch


def test_sync_pairs_hold_positives_and_shifted_negatives() -> None:
    avatar = synthetic_avatar(20)
    pairs = SyncPairs(avatar, np.arange(20), seed=0, min_offset=4)
    labels = [float(pairs[k][2]) for k in range(len(pairs))]
    assert labels.count(1.0) == labels.count(0.0) == 20
    for k in range(0, len(pairs), 2):
        i = k // 2
        _, audio, _ = pairs[k]
        assert torch.equal(audio, torch.from_numpy(avatar.features[i]))
        j = pairs.negative_index(k + 1)
        assert abs(j - i) >= 4
        assert torch.equal(pairs[k + 1][1], torch.from_numpy(avatar.features[j]))
    train, held = split_holdout(20, 0.25)
    assert list(train) == list(range(15)) and list(held) == list(range(15, 20))


# ---------------------------------------------------------------- losses


def test_ssim_is_one_for_identical_images_and_falls_with_noise() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 64, 64, generator=g)
    noisy = [(img + s * torch.randn(img.shape, generator=g)).clamp(0, 1) for s in (0.05, 0.2)]
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > float(ssim(img, noisy[0])) > float(ssim(img, noisy[1]))


def test_vgg_term_only_with_local_torchvision_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in VGG19Features().features.state_dict().items()},
               weights)
    pred, target = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    audio = torch.zeros(1, 32, 16, 16)
    _, without = UNetLoss(LossWeights(sync=0.0))(pred, target, audio)
    total, parts = UNetLoss(LossWeights(sync=0.0), vgg=load_vgg19(weights))(pred, target, audio)
    assert "vgg" not in without and parts["vgg"] > 0
    assert float(total) == pytest.approx(without["loss"] + 0.01 * parts["vgg"], rel=1e-5)
    bad = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torchvision vgg19"):
        load_vgg19(bad)


# ---------------------------------------------------------------- SyncNet


def test_syncnet_zeroes_gradients_every_step(tmp_path: Path) -> None:
    trainer = SyncNetTrainer(tmp_path, synthetic_avatar(16), "ave", get_profile("tiny"), CPU)
    batch = next(iter(trainer.loader))
    trainer.train_step(batch)
    before = copy.deepcopy(trainer.raw_model)
    trainer.train_step(batch)
    face, audio, label = batch
    sync_bce(before(face, audio), label).backward()
    for (name, p), q in zip(trainer.raw_model.named_parameters(), before.parameters(),
                            strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=f"{name}: gradients accumulated")


def test_syncnet_learns_real_pairs_and_reports_heldout_accuracy(tmp_path: Path) -> None:
    profile = get_profile("tiny")
    profile = dataclasses.replace(profile, syncnet=dataclasses.replace(profile.syncnet, epochs=6))
    trainer = train_syncnet(tmp_path, synthetic_avatar(24), "ave", profile, CPU)
    log = tmp_path / "logs" / "syncnet_ave.jsonl"
    train_loss = [v for _, v in read_scalars(log, "epoch/loss")]
    heldout_loss = [v for _, v in read_scalars(log, "epoch/heldout_loss")]
    heldout_acc = [v for _, v in read_scalars(log, "epoch/heldout_accuracy")]
    assert len(train_loss) == len(heldout_acc) == 6
    assert train_loss[-1] < train_loss[0]
    # 6 held-out frames of a 1/8-width net say nothing reliable about generalisation here;
    # the held-out figures must be real losses, logged every epoch.
    assert len(heldout_loss) == 6 and all(np.isfinite(heldout_loss)) and min(heldout_loss) > 0
    assert all(0.0 <= a <= 1.0 for a in heldout_acc)
    assert {h["positive_rate"] for h in trainer.history} - {0.0, 1.0}  # mixed batches
    state = load_checkpoint(syncnet_path(tmp_path, "ave"))
    assert state["finished"] and state["epoch"] == 6 and state["kind"] == "syncnet"
    assert state["metrics"]["heldout_accuracy"] == pytest.approx(heldout_acc[-1])


# ---------------------------------------------------------------- U-Net


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, float]]]:
    """Four uninterrupted tiny epochs overfitting two frames (one batch of 2 per epoch)."""
    avatar_dir = tmp_path_factory.mktemp("unet_full")
    syncnet = save_untrained_syncnet(avatar_dir)
    trainer = train_unet(avatar_dir, synthetic_avatar(24), "ave", tiny(epochs=4, batch_size=2),
                         CPU, syncnet_checkpoint=syncnet)
    return avatar_dir, trainer.history


def test_unet_tiny_profile_lowers_the_loss(unet_run: tuple[Path, list[dict[str, float]]]) -> None:
    avatar_dir, history = unet_run
    assert len(history) == 4
    assert {"l1", "ssim", "sync", "loss"} <= set(history[0])
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["l1"] < history[0]["l1"]
    assert [p.name for p in epoch_checkpoints(avatar_dir, "ave")] == [
        f"unet_ave_epoch{e:03d}.pt" for e in range(1, 5)]
    stable = load_checkpoint(unet_path(avatar_dir, "ave"))
    assert stable["epoch"] == 4 and stable["feature_mode"] == "ave"
    assert "optimizer" not in stable  # the renderer's copy holds the model only
    full = load_checkpoint(unet_epoch_path(avatar_dir, "ave", 4))
    for key, tensor in stable["model"].items():
        assert torch.equal(tensor, full["model"][key])


def test_resume_continues_from_the_saved_epoch_with_its_optimiser_state(
    tmp_path: Path, unet_run: tuple[Path, list[dict[str, float]]]
) -> None:
    reference_dir, _ = unet_run
    syncnet = save_untrained_syncnet(tmp_path)
    data = synthetic_avatar(24)
    first = train_unet(tmp_path, data, "ave", tiny(epochs=1, batch_size=2), CPU,
                       syncnet_checkpoint=syncnet)
    saved = load_checkpoint(unet_epoch_path(tmp_path, "ave", 1))
    assert saved["epoch"] == 1 and saved["step"] == first.step == 1

    resumed = UNetTrainer(tmp_path, data, "ave", tiny(epochs=2, batch_size=2), CPU,
                          syncnet_checkpoint=syncnet)
    resumed.load_state(saved)
    assert (resumed.start_epoch, resumed.step) == (1, 1)
    live, restored = first.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert restored["state"] and live["state"].keys() == restored["state"].keys()
    for idx, slots in live["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, restored["state"][idx][name]), (idx, name)
    assert restored["param_groups"][0]["lr"] == live["param_groups"][0]["lr"]

    train_unet(tmp_path, data, "ave", tiny(epochs=2, batch_size=2), CPU,
               syncnet_checkpoint=syncnet, resume=True)
    after = load_checkpoint(unet_epoch_path(tmp_path, "ave", 2))
    assert after["epoch"] == 2 and after["step"] == 2
    # one epoch + resume + one epoch == two uninterrupted epochs
    reference = load_checkpoint(unet_epoch_path(reference_dir, "ave", 2))
    for key, tensor in reference["model"].items():
        torch.testing.assert_close(after["model"][key], tensor, rtol=1e-4, atol=1e-5,
                                   msg=key)


def test_average_last_gives_the_renderer_the_mean_of_the_newest_epochs(tmp_path: Path) -> None:
    syncnet = save_untrained_syncnet(tmp_path)
    train_unet(tmp_path, synthetic_avatar(24), "ave",
               tiny(epochs=3, batch_size=2, keep=1, average_last=2), CPU,
               syncnet_checkpoint=syncnet)
    # keep=1 is raised to the two epochs the average needs
    assert [p.name for p in epoch_checkpoints(tmp_path, "ave")] == [
        "unet_ave_epoch002.pt", "unet_ave_epoch003.pt"]
    stable = load_checkpoint(unet_path(tmp_path, "ave"))
    assert stable["averaged_epochs"] == [2, 3] and stable["epoch"] == 3
    two, three = (load_checkpoint(unet_epoch_path(tmp_path, "ave", e))["model"] for e in (2, 3))
    moved = 0
    for key, tensor in stable["model"].items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (two[key] + three[key]) / 2, msg=key)
            moved += int(not torch.equal(two[key], three[key]))
        else:
            assert torch.equal(tensor, three[key]), key
    assert moved  # the epochs differ, so the mean is neither of them


def test_average_models_refuses_different_networks(tmp_path: Path) -> None:
    from training.checkpoints import average_models

    narrow = save_untrained_syncnet(tmp_path / "a")
    state = load_checkpoint(narrow)
    state["model"] = {k: torch.zeros(1, *v.shape) for k, v in state["model"].items()}
    wide = tmp_path / "wide.pt"
    torch.save(state, wide)
    with pytest.raises(ValueError, match="cannot average"):
        average_models([narrow, wide])


# ---------------------------------------------------------------- synctalk train


def test_train_command_runs_every_step_then_skips_what_is_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    avatar_dir = write_avatar_folder(tmp_path / "avatar")
    (avatar_dir / "features_ave.npy").unlink()  # the features step extracts them from audio.wav
    noise = np.random.default_rng(0).standard_normal(24 * 640).astype(np.float32)
    soundfile.write(avatar_dir / "audio.wav", 0.1 * noise, 16000)
    argv = ["train", str(avatar_dir), "--profile", "tiny", "--epochs", "1", "--device", "cpu",
            "--feature-mode", "ave"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert np.load(avatar_dir / "features_ave.npy").shape == (24, 32, 16, 16)
    stable = unet_path(avatar_dir, "ave")
    assert str(stable) in out and str(syncnet_path(avatar_dir, "ave")) in out
    syncnet = load_checkpoint(syncnet_path(avatar_dir, "ave"))
    accuracy = syncnet["metrics"]["heldout_accuracy"]
    assert f"syncnet held-out accuracy: {accuracy:.3f}" in out
    assert "unet sync weight: 10 (profile 10;" in out  # tiny's gate is 0: always open
    assert (avatar_dir / "cache" / "training" / "meta.json").is_file()
    assert syncnet["finished"] and syncnet["epoch"] == get_profile("tiny").syncnet.epochs
    unet = load_checkpoint(stable)
    assert unet["epoch"] == 1 and unet["syncnet"] == str(syncnet_path(avatar_dir, "ave"))
    before = stable.stat().st_mtime_ns

    assert main(argv) == 0  # everything done: both trainings are skipped
    assert stable.stat().st_mtime_ns == before
    assert f"syncnet held-out accuracy: {accuracy:.3f}" in capsys.readouterr().out
    assert load_checkpoint(syncnet_path(avatar_dir, "ave"))["step"] == syncnet["step"]


def test_train_command_rejects_bad_arguments(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    avatar_dir = write_avatar_folder(tmp_path / "avatar")
    assert main(["train", str(avatar_dir), "--epochs", "0"]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err
    assert main(["train", str(avatar_dir), "--vgg-weights", str(tmp_path / "none.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", str(avatar_dir), "--sync-gate", "1.5"]) == 2
    assert "sync gate must be a held-out accuracy in [0, 1]" in capsys.readouterr().err
    assert not (avatar_dir / "checkpoints").exists()


# ---------------------------------------------------------------- --init-from


@dataclasses.dataclass
class InitFrom:
    """What an `--init-from` run starts with: the source run's weights and loss history, and
    the new run's data and SyncNet (in the test's own folder)."""

    trained: Path
    history: list[dict[str, float]]
    data: AvatarArrays
    syncnet: Path


@pytest.fixture
def init_from(tmp_path: Path, unet_run: tuple[Path, list[dict[str, float]]]) -> InitFrom:
    reference_dir, history = unet_run
    return InitFrom(unet_path(reference_dir, "ave"), history, synthetic_avatar(24),
                    save_untrained_syncnet(tmp_path))


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path: Path,
                                                             init_from: InitFrom) -> None:
    from training.unet_train import warm_start

    trained, reference_history = init_from.trained, init_from.history
    data, syncnet = init_from.data, init_from.syncnet
    trainer = UNetTrainer(tmp_path, data, "ave", tiny(epochs=1, batch_size=2), CPU,
                          syncnet_checkpoint=syncnet)
    warm_start(trainer, trained)
    for key, tensor in load_checkpoint(trained)["model"].items():
        assert torch.equal(trainer.raw_model.state_dict()[key], tensor), key
    assert not trainer.optimizer.state_dict()["state"]  # a fresh optimiser

    warm = train_unet(tmp_path, data, "ave", tiny(epochs=1, batch_size=2, lr=2e-4), CPU,
                      syncnet_checkpoint=syncnet, init_from=trained)
    saved = load_checkpoint(unet_epoch_path(tmp_path, "ave", 1))
    assert saved["epoch"] == 1 and saved["step"] == 1  # counted from 0, not from the source
    assert saved["optimizer"]["param_groups"][0]["lr"] == 2e-4
    # the first step starts where the source run ended, not where a new one begins
    assert warm.history[0]["l1"] < reference_history[0]["l1"]


def test_init_from_refuses_weights_that_do_not_fit(tmp_path: Path, init_from: InitFrom) -> None:
    trained, data, syncnet = init_from.trained, init_from.data, init_from.syncnet
    cases = [
        (syncnet, tiny(epochs=1), False, "not a U-Net checkpoint"),
        (trained, tiny(epochs=1, width=0.5), False, "U-Net width 1.0"),
        (trained, tiny(epochs=1), True, "exclude each other"),
    ]
    for path, profile, resume, message in cases:
        with pytest.raises(ValueError, match=message):
            train_unet(tmp_path, data, "ave", profile, CPU, syncnet_checkpoint=syncnet,
                       init_from=path, resume=resume)
    assert not epoch_checkpoints(tmp_path, "ave")


def test_train_command_init_from_trains_even_when_a_run_is_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    unet_run: tuple[Path, list[dict[str, float]]],
) -> None:
    reference_dir, _ = unet_run
    avatar_dir = write_avatar_folder(tmp_path / "avatar")
    save_untrained_syncnet(avatar_dir)
    base = ["train", str(avatar_dir), "--profile", "tiny", "--epochs", "1", "--device", "cpu",
            "--feature-mode", "ave"]
    assert main(base) == 0
    stable = unet_path(avatar_dir, "ave")
    before = load_checkpoint(stable)["model"]
    assert main([*base, "--init-from", str(unet_path(reference_dir, "ave")), "--lr", "1e-4"]) == 0
    after = load_checkpoint(stable)
    assert after["epoch"] == 1 and after["config"]["profile"]["unet"]["lr"] == 1e-4
    assert any(not torch.equal(before[k], after["model"][k]) for k in before)
    capsys.readouterr()
    assert main([*base, "--init-from", str(tmp_path / "none.pt")]) == 2
    assert "--init-from" in capsys.readouterr().err
    assert main([*base, "--init-from", str(stable), "--resume"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*base, "--lr", "0"]) == 2
    assert "lr must be in (0, 1)" in capsys.readouterr().err


def test_the_demo_build_script_chains_profiles_that_exist_and_share_a_width() -> None:
    """Each stage of scripts/build_demo_avatar.sh starts `--init-from` the last, which refuses
    weights of another width: a renamed or re-sized profile would fail hours into a rebuild."""
    script = (ROOT / "scripts" / "build_demo_avatar.sh").read_text()
    named = re.findall(r"--profile ([a-z][\w-]*)", script)
    staged = re.findall(r"^\s*stage ([a-z][\w-]*) ", script, re.MULTILINE)
    assert named == ["demo"] and staged == ["demo-finetune", "demo-polish"]
    profiles = [get_profile(name) for name in named + staged]
    assert {p.unet.width for p in profiles} == {0.25}
    assert all(p.unet.max_frames == 0 for p in profiles[1:])
