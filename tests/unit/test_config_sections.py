"""The renderer and server settings live in their own sections, read from `SYNCTALK_RENDERER__…`
and `SYNCTALK_SERVER__…`, and `synctalk config` prints them."""

from __future__ import annotations

import argparse
import json

import pytest

from synctalk.commands import config as config_command
from synctalk.config import RendererConfig, ServicesConfig, load_settings


def test_the_sections_come_from_their_own_environment_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCTALK_RENDERER__BATCH_SIZE", "3")
    monkeypatch.setenv("SYNCTALK_RENDERER__RESIDENT", "off")
    monkeypatch.setenv("SYNCTALK_SERVER__DRAIN_GRACE_S", "7.5")
    monkeypatch.setenv("SYNCTALK_SERVER__TRANSPORT__MAX_CONNECTION_AGE_S", "42")
    settings = load_settings()
    assert (settings.renderer.batch_size, settings.renderer.resident) == (3, "off")
    assert settings.server.drain_grace_s == 7.5
    assert settings.server.transport.max_connection_age_s == 42


def test_moved_settings_are_no_longer_in_services() -> None:
    fields = set(ServicesConfig.model_fields)
    for gone in ("render_batch_size", "max_render_frames", "jpeg_quality", "drain_grace_s",
                 "max_message_bytes", "max_concurrent_streams", "transport"):
        assert gone not in fields, gone


def test_the_cuda_path_batches_by_its_own_size() -> None:
    config = RendererConfig(batch_size=4, batch_wait_ms=2.0, gpu_batch_size=32,
                            gpu_batch_wait_ms=9.0)
    assert config.batching(on_gpu=False) == (4, 2.0)
    assert config.batching(on_gpu=True) == (32, 9.0)


def test_synctalk_config_prints_the_sections(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_command.run(argparse.Namespace()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["renderer"]["max_frames"] == RendererConfig().max_frames
    assert printed["server"]["transport"]["keepalive_time_s"] > 0
    assert "render_batch_size" not in printed["services"]
