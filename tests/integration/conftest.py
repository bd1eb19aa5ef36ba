"""Fixtures of the integration tests: the in-process stack on 127.0.0.1 that the edge test
modules share (started on first use, stopped when the session ends), and an HTTP client on
the edge a module starts for itself."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import Edge, Stack, shared_stack


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
