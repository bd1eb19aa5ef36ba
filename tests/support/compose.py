"""docker-compose config rendering for the compose file tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import ROOT

COMPOSE = ROOT / "compose.yaml"


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: scripts/bootstrap.sh installs it")
    return subprocess.run([exe, "-f", str(path), "--project-directory", str(ROOT), "config"],
                          capture_output=True, text=True, timeout=60)
