"""`torchrun --nproc-per-node 2 -m synctalk train` on the CPU: DDP over gloo, rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from synctalk.avatar.layout import syncnet_path, unet_path
from tests.support.paths import ROOT
from tests.support.training import write_avatar_folder
from training.checkpoints import load_checkpoint
from training.metrics import read_scalars
from training.profiles import get_profile

TORCHRUN = Path(sys.executable).parent / "torchrun"


def test_two_process_training_with_gloo_writes_checkpoints_from_rank_zero_only(
    tmp_path: Path,
) -> None:
    avatar_dir = write_avatar_folder(tmp_path / "avatar")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SYNCTALK_LOG_FORMAT": "json"}
    result = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "synctalk", "train",
         str(avatar_dir), "--profile", "tiny", "--epochs", "1", "--device", "cpu",
         "--feature-mode", "ave"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count(f"unet:    {unet_path(avatar_dir, 'ave')}") == 1  # rank 0 prints

    checkpoints = avatar_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "syncnet_ave.pt", "unet_ave.pt", "unet_ave_epoch001.pt"]
    unet = load_checkpoint(checkpoints / "unet_ave_epoch001.pt")
    assert (unet["world_size"], unet["rank"], unet["epoch"]) == (2, 0, 1)
    # 2 frames over 2 ranks at batch 1: one step per rank
    assert unet["step"] == 1
    syncnet = load_checkpoint(syncnet_path(avatar_dir, "ave"))
    assert (syncnet["world_size"], syncnet["rank"], syncnet["finished"]) == (2, 0, True)
    tiny = get_profile("tiny").syncnet
    pairs_per_rank = 2 * 18 // 2  # 24 frames, the last quarter held out
    steps = -(-pairs_per_rank // tiny.batch_size) * tiny.epochs
    assert syncnet["step"] == steps
    assert 0.0 <= syncnet["metrics"]["heldout_accuracy"] <= 1.0

    # one writer: each step's scalars appear once, not once per rank
    unet_steps = [s for s, _ in read_scalars(avatar_dir / "logs" / "unet_ave.jsonl", "train/loss")]
    assert unet_steps == [1]
    sync_steps = [s for s, _ in read_scalars(avatar_dir / "logs" / "syncnet_ave.jsonl",
                                             "train/loss")]
    assert sync_steps == list(range(1, steps + 1))
