"""Training scalars on disk: TensorBoard event files when tensorboard is installed, and always
a JSONL file (one {"tag", "value", "step"} object per line) that needs nothing to read.

tensorboard is not a project dependency (a 5.5 MB wheel plus werkzeug, markdown, absl-py and
its data server, for a viewer): `pip install tensorboard` turns the event files on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class ScalarLog:
    """Rank 0's scalar writer; the other ranks build it with `enabled=False`."""

    def __init__(self, directory: Path, name: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = directory / f"{name}.jsonl"
        self._tb: Any = None
        if not enabled:
            return
        directory.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tb = SummaryWriter(str(directory / "tensorboard" / name))

    @property
    def tensorboard(self) -> bool:
        return self._tb is not None

    def write(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        now = time.time()
        with self.path.open("a") as f:
            for tag, value in values.items():
                f.write(json.dumps({"tag": prefix + tag, "value": value, "step": step,
                                    "time": now}) + "\n")
        if self._tb is not None:
            for tag, value in values.items():
                self._tb.add_scalar(prefix + tag, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_scalars(path: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one tag from a JSONL scalar file, in file order."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["tag"] == tag:
            out.append((int(row["step"]), float(row["value"])))
    return out
