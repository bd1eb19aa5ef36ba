"""`python -m bench.bench_gpu --quick` runs on the CPU device and reports every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synctalk.config import REPO_ROOT


def test_bench_gpu_quick_runs_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "SYNCTALK_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "bench.bench_gpu", "--quick", "--cpu",
                           "--json", str(out)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for header in ("(a) host-copy frames/s", "(b) resident frames/s",
                   "(d) SyncTalk_2D-style frames/s", "p95 time to first frame"):
        assert header in done.stdout
    report = json.loads(out.read_text())
    rows = report["avatars"][0]["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["host_copy_fps"] > 0 and r["resident_fps"] > 0 for r in rows)
    assert report["avatars"][0]["baseline_fps"] > 0
    service = report["service"][0]
    assert service["frames"] == service["streams"] * report["profile"]["stream_frames"]
    assert service["total_fps"] > 0 and service["p95_ttff_ms"] > 0
