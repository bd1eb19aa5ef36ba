"""The edge and the leftover checks the bad-input modules share: each module registers these
as its `private_tmp`, `edge` and `clean` fixtures, so every refusal is checked the same way."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import Edge, Stack

MAX_UPLOAD_BYTES = 2_000_000  # above the multipart parser's 1 MB spool: big parts hit disk
MAX_UPLOAD_SECONDS = 5.0
UPLOAD_TIMEOUT_S = 1.5
MAX_MESSAGE_BYTES = 1024 * 1024


def private_tmp(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The in-process servers' temporary directory for this module, so leftovers are ours
    alone (other processes share the system one)."""
    path = tmp_path_factory.mktemp("spool")
    saved, tempfile.tempdir = tempfile.tempdir, str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved


def edge(stack: Stack, private_tmp: Path) -> Edge:
    """An edge with small upload and message caps, so each limit is reached cheaply."""
    return stack.edge(max_upload_bytes=MAX_UPLOAD_BYTES, max_upload_seconds=MAX_UPLOAD_SECONDS,
                      upload_timeout_s=UPLOAD_TIMEOUT_S,
                      server={"max_message_bytes": MAX_MESSAGE_BYTES},
                      debug={"endpoints": True})


def temp_fds(tmp: Path) -> list[str]:
    """This process's open files under `tmp` (spool files show as '... (deleted)')."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(tmp)):
                found.append(target)
    return found


def snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*")) if root.exists() else set()


@contextlib.contextmanager
def leaves_nothing(stack: Stack, edge: Edge, tmp: Path) -> Iterator[None]:
    """After the block: no session or downstream stream running, no file added to the
    temporary or debug directories, no temporary file held open, and the edge healthy."""
    files, debug = snapshot(tmp), snapshot(stack.root / "debug")
    yield
    stack.settle(edge)
    assert snapshot(tmp) == files
    assert temp_fds(tmp) == []
    assert snapshot(stack.root / "debug") == debug
    with edge.client(timeout=10) as c:
        assert c.get("/health").json()["status"] == "ok"


def clean(stack: Stack, edge: Edge, private_tmp: Path) -> Iterator[None]:
    with leaves_nothing(stack, edge, private_tmp):
        yield


def register() -> tuple[object, object, object]:
    """This module's functions as the `private_tmp`, `edge` and `clean` fixtures of a test
    module (assign the result there: pytest collects fixtures from the module's names)."""
    return (pytest.fixture(private_tmp, scope="module", name="private_tmp"),
            pytest.fixture(edge, scope="module", name="edge"),
            pytest.fixture(clean, name="clean"))
