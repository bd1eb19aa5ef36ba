"""Fixtures of the integration tests: the in-process stack on 127.0.0.1 that the edge test
modules share (started on first use, stopped when the session ends), and an HTTP client on
the edge a module starts for itself."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from synctalk.rpc.gen.lipsync.v1 import avatar_pb2_grpc
from tests.support.stack import Edge, Stack, animate_stub, shared_stack


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Stack:
    """The session's single-renderer stack; a module may override it (e.g. to skip first)."""
    return shared_stack(request)


@pytest.fixture(scope="module")
def client(edge: Edge) -> Iterator[httpx.Client]:
    """A client on the module's `edge` fixture (each module starts its edge with the
    settings it tests)."""
    with edge.client() as c:
        yield c


@pytest.fixture(scope="module")
def stub(edge: Edge) -> Iterator[avatar_pb2_grpc.AvatarStub]:
    """An Avatar (Animate) stub on the module's `edge`."""
    with animate_stub(edge) as s:
        yield s
