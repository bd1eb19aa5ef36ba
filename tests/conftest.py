"""Fixtures shared by the whole suite. Async code runs through `asyncio.run` inside plain tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ARTIFACTS, free_port


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine two threads ran small nets up to 6x
    slower (OpenMP workers wait for a core). Modules opt in with `usefixtures`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
