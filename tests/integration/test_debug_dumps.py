"""Debug dumps on a disk that refuses them (issue 14 fault 2), on a real edge process: the
frames go to a read-only file system (an unwritable directory) and the audio to a 64 KiB
one that fills after two short uploads (soundfile then raises its LibsndfileError, a
RuntimeError, which used to skip the slot's release). Six uploads against a cap of four
sessions must all stream to the end, the slots come back, each failure is logged once per utterance (not once per frame), and no partial
file is left: whatever is on the small disk is a complete, readable WAV.

The file systems are tmpfs mounts in a private mount namespace of the edge process
(`unshare -rm`, no root needed where user namespaces are allowed; skipped elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from tests.support.audio import tone_pcm, wav_bytes
from tests.support.http import frames_of, upload
from tests.support.paths import ROOT, free_port
from tests.support.processes import EdgeProcess
from tests.support.stack import Stack


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not _namespaces_work(),
                                reason="needs unshare -rm (user and mount namespaces)")


class NamespacedEdge(EdgeProcess):
    """An edge process whose `mounts` (path -> tmpfs options) exist only for it."""

    def __init__(self, *args: object, mounts: dict[Path, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.mounts = mounts

    def start(self) -> None:
        script = "".join(f"mount -t tmpfs -o {opts} tmpfs {path} && "
                         for path, opts in self.mounts.items())
        script += (f"exec {sys.executable} -m synctalk serve edge --host 127.0.0.1 "
                   f"--port {self.port}")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

    def seen(self, path: Path) -> Path:
        """`path` as the edge sees it (through its mount namespace)."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")


@pytest.fixture(scope="module")
def edge(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespacedEdge]:
    root = tmp_path_factory.mktemp("dumps")
    readonly, small = root / "readonly", root / "small"
    readonly.mkdir()
    small.mkdir()
    env = {
        **os.environ,
        "SYNCTALK_MODELS__DEVICE": "cpu",
        "SYNCTALK_MODELS__AVATARS_DIR": str(stack.store),
        "SYNCTALK_LOG_FORMAT": "json",
        "SYNCTALK_SERVICES__RATE_LIMIT_PER_S": "0",
        "SYNCTALK_SERVICES__MAX_SESSIONS": "4",
        "SYNCTALK_SERVICES__TTS_TARGET": stack.tts.address,
        "SYNCTALK_SERVICES__AUDIO_FEATURES_TARGET": stack.features.address,
        "SYNCTALK_SERVICES__RENDERER_TARGET": stack.renderers[0].address,
        "SYNCTALK_DEBUG__ENABLED": "true",
        "SYNCTALK_DEBUG__SAVE_FRAMES": "true",
        "SYNCTALK_DEBUG__SAVE_AUDIO": "true",
        "SYNCTALK_DEBUG__FRAMES_DIR": str(readonly / "frames"),
        "SYNCTALK_DEBUG__AUDIO_DIR": str(small),
    }
    process = NamespacedEdge("edge-dumps", free_port(), free_port(), env, root,
                             mounts={readonly: "ro,size=64k", small: "size=32k"})
    with process.serving():
        yield process


UPLOADS = 6


def test_dumps_to_an_unwritable_dir_and_a_full_disk_never_hurt_sessions(
        edge: NamespacedEdge) -> None:
    small = Path(edge.env["SYNCTALK_DEBUG__AUDIO_DIR"])
    wav = wav_bytes(tone_pcm(0.4))
    with edge.client(timeout=60) as client:
        for _ in range(UPLOADS):
            reply = upload(client, wav, format="av")
            assert reply.status_code == 200, reply.text
            _, frames, end = frames_of(reply.content)
            assert end["status"] == "complete" and len(frames) == 10
        deadline = time.monotonic() + 10
        while client.get("/health").json()["active_sessions"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health").json()["active_sessions"] == 0
    log = edge.log_path.read_text()
    failures = [line for line in log.splitlines() if "debug.write_failed" in line]
    frames_failed = [line for line in failures if '"kind": "frames"' in line]
    audio_failed = [line for line in failures if '"kind": "audio"' in line]
    assert len(frames_failed) == UPLOADS  # once per utterance, not once per frame
    assert 1 <= len(audio_failed) < UPLOADS  # the small disk holds the first
    dumped = sorted(edge.seen(small).iterdir())
    assert dumped and all(p.suffix == ".wav" for p in dumped), dumped  # no .part left
    for path in dumped:
        assert sf.info(str(path)).frames == 6400  # complete, readable
    assert not (edge.seen(Path(edge.env["SYNCTALK_DEBUG__FRAMES_DIR"]))).exists()
