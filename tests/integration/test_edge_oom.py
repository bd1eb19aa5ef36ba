"""A renderer that runs out of GPU memory, seen from the edge (issue 14): the renderer answers
RESOURCE_EXHAUSTED (`torch.OutOfMemoryError` injected into its U-Net runner, as
tests/integration/test_resident_render.py does on the renderer alone), the edge answers 503 with
`Retry-After` naming the renderer, nothing is left running, and the next session works."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import torch

from tests.support.audio import tone_pcm, wav_bytes
from tests.support.stack import AVATAR, Stack


class OutOfMemoryRunner:
    """Wraps the renderer's U-Net runner: raises CUDA OOM while `failing` is set."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.audio_shape = runner.audio_shape
        self.failing = True
        self.raised = 0

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self.failing:
            self.raised += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.runner(image, audio)


def test_renderer_out_of_memory_is_503_with_retry_after_and_the_next_session_works(
        stack: Stack) -> None:
    edge = stack.edge()
    servicer = stack.renderer_servicers[0]
    model = stack.loop.run(asyncio.to_thread(servicer.store.model, AVATAR, "ave"))
    faulty = OutOfMemoryRunner(model.runner)
    model.runner = faulty
    upload = {"files": {"audio_file": ("a.wav", wav_bytes(tone_pcm(0.6)), "audio/wav")}}
    try:
        with edge.client() as client:
            refused = client.post("/generate-from-audio", params={"realtime": "0"}, **upload)
            faulty.failing = False
            assert faulty.raised >= 1, "the injected fault never ran"
            assert refused.status_code == 503, refused.text
            assert refused.json()["service"] == "renderer"
            assert "out of GPU memory" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) >= 1
            deadline = time.monotonic() + 5
            while (client.get("/health").json()["active_sessions"]
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            assert client.get("/health").json()["active_sessions"] == 0
            again = client.post("/generate-from-audio", params={"realtime": "0"}, **upload)
            assert again.status_code == 200, again.text
    finally:
        model.runner = faulty.runner
