"""compose.yaml validated without a Docker engine (Debian's docker-compose v1 `config`), and
the health probe its checks run, against a real gRPC server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from synctalk.config import load_settings
from tests.support.compose import COMPOSE, compose_config
from tests.support.tts import running_server


def test_compose_file_is_valid_and_has_one_container_per_service() -> None:
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"tts", "audio_features", "renderer", "edge"} <= set(services)
    for name in ("tts", "audio_features", "renderer", "edge"):
        assert services[name]["healthcheck"]["test"], name
    assert "synctalk.rpc.healthcheck" in " ".join(services["renderer"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["edge"]["healthcheck"]["test"])
    edge_env = services["edge"]["environment"]
    assert edge_env["SYNCTALK_SERVICES__RENDERER_TARGET"] == "renderer:50063"
    mounts = [str(v) for v in services["renderer"]["volumes"]]
    assert any(m.endswith("/avatars:ro") or ":ro" in m for m in mounts), mounts


def test_gpu_renderer_reserves_a_device() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]["renderer-gpu"]
    devices = raw["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and raw["profiles"] == ["gpu"]


def test_an_unknown_key_fails_validation(tmp_path: Path) -> None:
    bad = yaml.safe_load(COMPOSE.read_text())
    bad["services"]["tts"]["portz"] = ["1"]
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = compose_config(path)
    assert result.returncode != 0 and "portz" in result.stderr


def probe(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synctalk.rpc.healthcheck", target,
                           "--timeout", "2"], capture_output=True, text=True, timeout=30)


def test_health_probe_reports_serving_and_unreachable() -> None:
    with running_server(load_settings(models={"warmup": False})) as server:
        serving = probe(server.address)
        address = server.address
    assert serving.returncode == 0 and serving.stdout.strip() == "SERVING"
    gone = probe(address)
    assert gone.returncode == 1 and gone.stdout.strip() == "NOT SERVING"


def test_inner_services_are_published_only_by_the_debug_profile() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("tts", "audio_features", "renderer", "renderer-gpu"):
        assert "ports" not in raw[name], f"{name} must not be published"
    debug = raw["debug-ports"]
    assert debug["profiles"] == ["debug"]
    assert all(str(p).startswith("127.0.0.1:") for p in debug["ports"])
    published = {str(p).split(":")[1] for p in debug["ports"]}
    assert {"50061", "50062", "50063"} <= published
    script = debug["command"][0]
    for target in ("tts:50061", "audio_features:50062", "renderer:50063"):
        assert f"TCP:{target}" in script
    assert raw["tts"]["environment"]["SYNCTALK_SERVICES__METRICS_PORT"] == "9464"
