"""Security rules that hold for the whole source tree, checked on the code itself.

A checkpoint loaded with pickle can run arbitrary code, so every `torch.load` must pass
`weights_only=True`; an unpinned dependency can change under a release, so every
requirement in pyproject.toml is pinned with `==` (the audit step, `make audit`, checks the
pinned set)."""

from __future__ import annotations

import ast
import re
import tomllib

import pytest

from tests.support.paths import ROOT

SOURCE_DIRS = ("synctalk", "services", "training", "kernels", "bench", "tests")
PIN = re.compile(r"^[A-Za-z0-9_.\-]+(\[[A-Za-z0-9_,\-]+\])?==[A-Za-z0-9_.+\-]+$")


def unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of `torch.load(...)` calls without a literal `weights_only=True`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr == "load"
                and isinstance(func.value, ast.Name) and func.value.id == "torch"):
            continue
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                   and k.value.value is True for k in node.keywords)
        if not safe:
            lines.append(node.lineno)
    return lines


def test_the_checker_flags_unsafe_loads() -> None:
    assert unsafe_torch_loads("import torch\ntorch.load('x')\n") == [2]
    assert unsafe_torch_loads("torch.load('x', weights_only=False)") == [1]
    assert unsafe_torch_loads("torch.load('x', map_location='cpu', weights_only=True)") == []


def test_every_torch_load_is_weights_only() -> None:
    offenders = []
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line in unsafe_torch_loads(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    return reqs


@pytest.mark.parametrize("requirement", requirements())
def test_every_dependency_is_pinned(requirement: str) -> None:
    assert PIN.match(requirement), f"{requirement!r} is not pinned with =="
