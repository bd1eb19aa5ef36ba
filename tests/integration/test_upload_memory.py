"""What an upload may cost the edge (issue 20, issue 14 fault 3), measured on a real edge
process (`python -m synctalk serve edge`, against the test stack's backends): its peak
resident memory (VmHWM) grows by at most 200 MB for any upload up to the size limit, alone
and four at once, bombs included; and 64 concurrent 50 MiB uploads against a cap of 16
sessions are refused before their bodies are read, with the edge's peak RSS under 1 GiB.
The figures are in docs/security.md ("Upload memory")."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.support.audio import tone_pcm, wav_bytes
from tests.support.paths import free_port
from tests.support.processes import EdgeProcess
from tests.support.stack import Stack

MiB = 1024 * 1024
MAX_UPLOAD = 50 * MiB  # the default services.max_upload_bytes
PEAK_GROWTH_LIMIT = 200 * 1000 * 1000
CONCURRENT_RSS_LIMIT = 1024 * MiB


@pytest.fixture(scope="module")
def edge(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """An edge process with the default limits (16 sessions, 50 MiB, 600 s) and its own
    temporary directory, so a spool file left behind would show."""
    root = tmp_path_factory.mktemp("edge-memory")
    (root / "spool").mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(root / "spool"),
        "SYNCTALK_MODELS__DEVICE": "cpu",
        "SYNCTALK_MODELS__AVATARS_DIR": str(stack.store),
        "SYNCTALK_LOG_FORMAT": "json",
        "SYNCTALK_SERVICES__RATE_LIMIT_PER_S": "0",  # every test client is one address
        "SYNCTALK_SERVICES__TTS_TARGET": stack.tts.address,
        "SYNCTALK_SERVICES__AUDIO_FEATURES_TARGET": stack.features.address,
        "SYNCTALK_SERVICES__RENDERER_TARGET": stack.renderers[0].address,
    }
    process = EdgeProcess("edge-memory", free_port(), free_port(), env, root)
    with process.serving():
        yield process


def peak_rss(edge: EdgeProcess) -> int:
    for line in Path(f"/proc/{edge.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def active_sessions(edge: EdgeProcess) -> int:
    with edge.client(timeout=10) as c:
        return int(c.get("/health").json()["active_sessions"])


def settled(edge: EdgeProcess) -> None:
    deadline = time.monotonic() + 10
    while active_sessions(edge) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert active_sessions(edge) == 0
    assert list((edge.log_path.parent / "spool").iterdir()) == []


# -- the uploads ----------------------------------------------------------------------------------


def wav_head(rate: int, channels: int, data_bytes: int) -> bytes:
    block = channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


def metadata_bomb() -> bytes:
    """32 KB: a LIST/INFO chunk whose tag claims 1 GB (FFmpeg allocated and zeroed it)."""
    pcm = tone_pcm(1.0)[:30_000]
    tag = b"INAM" + struct.pack("<I", 1_000_000_000) + b"x" * 100
    body = (b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
            + b"LIST" + struct.pack("<I", 0xFFFFFFF0) + b"INFO" + tag
            + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def high_rate_silence() -> bytes:
    """~1.4 MB: ten minutes of FLAC silence at 655 350 Hz (393 M samples to decode)."""
    out = io.BytesIO()
    rate = 655_350
    with sf.SoundFile(out, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(rate * 10, np.int16)
        for _ in range(60):
            f.write(block)
    return out.getvalue()


def long_wav() -> bytes:
    """50 MiB of 16 kHz mono: 27 minutes, decoded up to the 600 s limit then refused."""
    size = MAX_UPLOAD - 64 * 1024
    return wav_head(16000, 1, size) + bytes(size)


def stereo_48k() -> bytes:
    """50 MiB of 48 kHz stereo: 4.5 minutes, accepted and streamed."""
    seconds = (MAX_UPLOAD - 64 * 1024) // (48000 * 4)
    t = np.arange(48000 * 5) / 48000
    block = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    frames = np.resize(np.repeat(block[:, None], 2, 1), (48000 * seconds, 2))
    return wav_bytes(frames.tobytes(), rate=48000, channels=2)


UPLOADS = {
    "WAV chunk claiming 1 GB": (metadata_bomb, 422),
    "10 min FLAC at 655 kHz": (high_rate_silence, 413),
    "50 MiB WAV, 27 min": (long_wav, 413),
    "50 MiB WAV, 48 kHz stereo": (stereo_48k, 200),
}


def send(edge: EdgeProcess, data: bytes) -> int:
    """POST the file as the seed's multipart form; for a stream, read its start and hang up."""
    with httpx.Client(base_url=edge.url, timeout=120) as c:
        with c.stream("POST", "/generate-from-audio", params={"format": "av"},
                      files={"audio_file": ("a.wav", data, "audio/wav")}) as reply:
            if reply.status_code == 200:
                next(reply.iter_bytes())
            else:
                reply.read()
                assert "Traceback" not in reply.text
            return reply.status_code


def test_any_upload_adds_at_most_200_mb_alone_and_four_at_once(edge: EdgeProcess) -> None:
    files = {name: make() for name, (make, _) in UPLOADS.items()}
    assert all(len(data) <= MAX_UPLOAD for data in files.values())
    assert send(edge, wav_bytes(tone_pcm(1.0))) == 200  # warm: imports, pools, caches
    settled(edge)
    base = peak_rss(edge)
    growth: dict[str, int] = {}
    for name, data in files.items():
        assert send(edge, data) == UPLOADS[name][1], name
        settled(edge)
        growth[name] = peak_rss(edge) - base
    batches = {"one of each at once": list(UPLOADS),
               "4 x 50 MiB WAV, 27 min at once": ["50 MiB WAV, 27 min"] * 4}
    for batch, names in batches.items():
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda name: send(edge, files[name]), names))
        assert statuses == [UPLOADS[name][1] for name in names], (batch, statuses)
        settled(edge)
        growth[batch] = peak_rss(edge) - base
    print(f"edge peak RSS {base / MiB:.0f} MiB before; growth MiB: "
          + ", ".join(f"{k}: {v / MiB:.0f}" for k, v in growth.items()))
    assert max(growth.values()) <= PEAK_GROWTH_LIMIT, growth


def test_64_concurrent_50mib_uploads_against_a_cap_of_16(edge: EdgeProcess) -> None:
    """Each client sends its headers (Content-Length 50 MiB) and waits; the edge admits 16
    and answers the other 48 with 503 + Retry-After before a byte of their bodies was sent.
    The 16 then send their 50 MiB (27 minutes of audio, refused 413 at 600 s)."""
    body = long_wav()
    head = (b"POST /generate-from-audio HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: audio/wav\r\nContent-Length: %d\r\n\r\n" % len(body))
    socks = [socket.create_connection(("127.0.0.1", edge.port), timeout=30) for _ in range(64)]
    try:
        for sock in socks:
            sock.sendall(head)
        refused: list[socket.socket] = []
        waiting = list(socks)
        deadline = time.monotonic() + 15
        while len(refused) < 48 and time.monotonic() < deadline:
            for sock in list(waiting):
                sock.settimeout(0.01)
                with contextlib.suppress(TimeoutError):
                    reply = sock.recv(4096)
                    assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
                    assert b"retry-after: 2" in reply.lower()
                    refused.append(sock)
                    waiting.remove(sock)
        assert len(refused) >= 48 and active_sessions(edge) == 16
        statuses: list[bytes] = []
        lock = threading.Lock()

        def upload(sock: socket.socket) -> None:
            sock.settimeout(120)
            sock.sendall(body)
            reply = sock.recv(4096)
            with lock:
                statuses.append(reply.split(b" ", 2)[1])

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(upload, waiting))
        assert statuses == [b"413"] * len(waiting)
    finally:
        for sock in socks:
            sock.close()
    settled(edge)
    peak = peak_rss(edge)
    print(f"64 x 50 MiB, cap 16: {len(refused)} refused before their body, "
          f"edge peak RSS {peak / MiB:.0f} MiB")
    assert peak <= CONCURRENT_RSS_LIMIT
