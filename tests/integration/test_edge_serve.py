"""`synctalk serve` with no service: the whole stack on 127.0.0.1 (three backend subprocesses
and the edge), the page's URL printed, a generation through it, and a clean stop on SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.audio import tone_pcm, wav_bytes
from tests.support.avatars import make_avatar
from tests.support.paths import free_port
from tests.support.stack import AVATAR, AVATAR_SIZE


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_without_a_service_runs_the_whole_stack(tmp_path: Path) -> None:
    store = tmp_path / "avatars"
    make_avatar(store, AVATAR, num_frames=6, width=AVATAR_SIZE[0], height=AVATAR_SIZE[1])
    ports = {name: free_port() for name in ("TTS", "AUDIO_FEATURES", "RENDERER", "EDGE_GRPC")}
    http_port = free_port()
    env = {
        **os.environ,
        "SYNCTALK_MODELS__DEVICE": "cpu",
        "SYNCTALK_MODELS__AVATARS_DIR": str(store),
        "SYNCTALK_LOG_FORMAT": "json",
        **{f"SYNCTALK_SERVICES__{name}_PORT": str(port) for name, port in ports.items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "synctalk", "serve", "--port", str(http_port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if "SyncTalk 2D is up:" in line:
                url = line.split("up:", 1)[1].strip()
        assert url == f"http://127.0.0.1:{http_port}/"
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/health").json()["status"] == "ok"
            assert "<canvas" in client.get("/").text
            reply = client.post("/generate-from-audio", params={"realtime": "false"},
                                files={"audio_file": ("a.wav", wav_bytes(tone_pcm(0.4)),
                                                      "audio/wav")})
            assert reply.status_code == 200 and reply.content.count(b"--frame\r\n") == 11
        assert all(port_open(port) for port in ports.values())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not any(port_open(port) for port in [*ports.values(), http_port])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
