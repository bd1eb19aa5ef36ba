"""Fixtures of the integration tests: the in-process stack on 127.0.0.1 that the edge test
modules share (started on first use, stopped when the session ends)."""

from __future__ import annotations

import pytest

from tests.support.stack import Stack, shared_stack


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Stack:
    """The session's single-renderer stack; a module may override it (e.g. to skip first)."""
    return shared_stack(request)
