"""A real stack on 127.0.0.1 for the edge tests (tts, audio_features, renderer replicas and
edges on one background event loop), and the tests of the stack as a whole: health of every
service, and two renderer replicas behind one target both getting sessions."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from synctalk.audio.pcm import s16le_to_float
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("edge-stack"), renderers=2)
    try:
        yield stack
    finally:
        stack.close()


def test_health_reports_every_service(two_replicas: Stack) -> None:
    edge = two_replicas.edge()
    with edge.client() as client:
        health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["services"] == {"edge": "ok", "tts": "ok", "audio_features": "ok",
                                  "renderer": "ok"}


def test_two_renderer_replicas_behind_one_target_both_get_sessions(two_replicas: Stack) -> None:
    """The renderer target lists two ports; round_robin spreads sessions over both."""
    edge = two_replicas.edge()
    before = [s.batcher.items_run for s in two_replicas.renderer_servicers]
    pcm = tone_pcm(0.4)
    with edge.client() as client:
        for _ in range(6):
            reply = client.post("/generate-from-audio", params={"format": "av", "realtime": "0"},
                                files={"audio_file": ("a.wav", wav_bytes(pcm), "audio/wav")})
            assert reply.status_code == 200, reply.text
    rendered = [s.batcher.items_run - b for s, b in zip(two_replicas.renderer_servicers, before,
                                                        strict=True)]
    assert all(n >= 10 for n in rendered), rendered
    assert sum(rendered) == 6 * 10


def test_frame_audio_is_the_input_audio(two_replicas: Stack) -> None:
    """Through both replicas: the audio slices joined back are the uploaded samples."""
    from services.edge import stream_format

    edge = two_replicas.edge()
    pcm = tone_pcm(0.5)
    with edge.client() as client:
        reply = client.post("/generate-from-audio", params={"format": "av", "realtime": "0"},
                            files={"audio_file": ("a.wav", wav_bytes(pcm), "audio/wav")})
    frames = [(h, p) for h, p in stream_format.parse(reply.content) if h["type"] == "frame"]
    audio = b"".join(p[h["image_bytes"]:] for h, p in frames)
    assert len(frames) == 13  # ceil(0.5 s * 25)
    assert audio[: len(pcm)] == pcm and not audio[len(pcm):].strip(b"\0")
    assert np.abs(s16le_to_float(audio)).max() > 0.3
