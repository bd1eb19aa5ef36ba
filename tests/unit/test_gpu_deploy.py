"""The GPU deployment as files: compose's gpu profile routes its edge to the GPU renderer,
the GPU image runs unprivileged with a writable CuPy cache, and the GPU extras bring what the
resident renderer imports (it cannot be built or run without Docker and a GPU here)."""

from __future__ import annotations

import tomllib

import yaml

from tests.support.paths import ROOT


def test_the_gpu_profile_routes_its_edge_to_the_gpu_renderer() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    edge, renderer = services["edge-gpu"], services["renderer-gpu"]
    assert edge["profiles"] == renderer["profiles"] == ["gpu"]
    assert edge["environment"]["SYNCTALK_SERVICES__RENDERER_TARGET"] == "renderer-gpu:50063"
    assert edge["depends_on"]["renderer-gpu"] == {"condition": "service_healthy"}
    assert "renderer" not in edge["depends_on"]
    assert renderer["environment"]["SYNCTALK_MODELS__DEVICE"] == "cuda"
    assert any(str(v).endswith(":/var/cache/cupy") for v in renderer["volumes"])
    assert services["edge"]["environment"]["SYNCTALK_SERVICES__RENDERER_TARGET"] == \
        "renderer:50063"


def test_the_gpu_image_is_unprivileged_with_a_writable_kernel_cache() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile.gpu").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    text = "\n".join(lines)
    assert "CUPY_CACHE_DIR=/var/cache/cupy" in text
    assert f"-o {users[-1]}" in text and "/var/cache/cupy" in text
    assert "download.pytorch.org/whl/cu" in text and "[cuda12]" in text


def test_gpu_extras_and_python_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in ("cuda12", "cuda13"):
        assert any(dep.startswith("torchvision==") for dep in project["optional-dependencies"][extra])
    spec = project["requires-python"]
    assert spec == ">=3.11,<3.13"
