"""Reliability under faults (issue 8 §1), SIGTERM, with every service a real process on
127.0.0.1: each service (and the edge) drains: health turns NOT_SERVING first, the stream in
flight finishes, new streams get UNAVAILABLE, the process exits 0.

The stack (tests/support/fault_stack.py) is started once for the module.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from synctalk.rpc.gen.lipsync.v1 import (
    audio_features_pb2_grpc,
    common_pb2,
    renderer_pb2_grpc,
    tts_pb2_grpc,
)
from tests.support import fault_stack
from tests.support.audio import tone_pcm
from tests.support.fault_stack import Faults, animate, ensure
from tests.support.faults import FPS, figure, upload
from tests.support.processes import AVATAR, SERVING, AvStream, HeldCall, grpc_health, wait_until
from tests.support.renderer import config as render_config
from tests.support.renderer import feature_request
from tests.support.tts import config as tts_config
from tests.support.tts import text as tts_text

faults, up = fault_stack.register()
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class DrainCase:
    """A stream on one service: its method, first request, requests sent before and after
    the signal, and what the complete answer must be."""

    method: Callable[[grpc.Channel], Callable[..., Any]]
    first: object
    before: list[object]
    after: list[object]
    check: Callable[[list[Any]], None]
    metadata: tuple[tuple[str, str], ...] = ()


def audio_chunks(seconds: float, start_s: float = 0.0) -> list[common_pb2.AudioChunk]:
    pcm = tone_pcm(start_s + seconds)[int(start_s * 16000) * 2 :]
    first = int(start_s * 16000)
    return [common_pb2.AudioChunk(pcm=pcm[i : i + 6400], sample_rate=16000,
                                  start_sample=first + i // 2)
            for i in range(0, len(pcm), 6400)]


def _check_sentences(chunks: list[Any]) -> None:
    assert [c.text for c in chunks if c.end_of_sentence] == [
        "This sentence is spoken before the signal.", "And this one after it."]


def _check_indices(n: int) -> Callable[[list[Any]], None]:
    def check(messages: list[Any]) -> None:
        assert [m.index for m in messages] == list(range(n))
    return check


def _drain_case(service: str) -> DrainCase:
    window = np.random.default_rng(0).standard_normal((32, 16, 16)).astype(np.float32)
    if service == "tts":
        return DrainCase(lambda ch: tts_pb2_grpc.TextToSpeechStub(ch).Synthesize,
                         tts_config(deterministic=True),
                         [tts_text("This sentence is spoken before the signal. ")],
                         [tts_text("And this one after it.")], _check_sentences)
    if service == "audio_features":
        chunks = audio_chunks(2.0)
        return DrainCase(lambda ch: audio_features_pb2_grpc.AudioFeaturesStub(ch).Extract,
                         chunks[0], chunks[1:5], chunks[5:], _check_indices(50),
                         (("x-feature-mode", "ave"),))
    frames = [feature_request(i, window, rms=0.2, voiced=True) for i in range(20)]
    return DrainCase(lambda ch: renderer_pb2_grpc.RendererStub(ch).Render,
                     render_config(AVATAR), frames[:10], frames[10:], _check_indices(20))


@pytest.mark.parametrize("service", ["tts", "audio_features", "renderer"])
def test_sigterm_drains_the_stream_in_flight_and_refuses_new_ones(faults: Faults,
                                                                 service: str) -> None:
    proc = faults.stack.backends[service]
    ensure(faults, [proc, faults.edge], faults.edge, (service,))
    case = _drain_case(service)
    with grpc.insecure_channel(proc.address) as channel:
        method = case.method(channel)
        held = HeldCall(method, case.first, metadata=case.metadata)
        held.send(*case.before)
        wait_until(lambda: held.responses or held.done.is_set(), 30, "the first response")
        assert held.error is None

        signalled = time.monotonic()
        proc.signal(signal.SIGTERM)
        not_serving_s = wait_until(lambda: grpc_health(proc.address) == NOT_SERVING, 5,
                                   "NOT_SERVING")
        figure(f"drain_{service}.not_serving_after_sigterm_s", not_serving_s, "s")
        assert faults.edge.health()[service] == "not_serving"
        with pytest.raises(grpc.RpcError) as refused:
            list(method(iter([case.first, *case.before]), timeout=10, metadata=case.metadata))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert proc.running  # still draining

        held.send(*case.after)
        held.close()
        assert held.done.wait(30)
        assert held.error is None, held.error
        case.check(held.responses)
    assert proc.wait_exit(30) == 0
    figure(f"drain_{service}.exit_after_sigterm_s", time.monotonic() - signalled, "s")


def test_sigterm_on_the_edge_finishes_its_streams_and_refuses_new_ones(up: Faults) -> None:
    edge = up.edge
    seconds = 3.0
    session = AvStream(edge, "/generate-from-audio", **upload(seconds))
    session.wait_frames(5)

    edge.signal(signal.SIGTERM)
    wait_until(lambda: grpc_health(edge.grpc_address) != SERVING, 5, "gRPC not serving")
    err = animate(edge, "renderer")
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE

    def refuses_http() -> bool:
        try:
            with edge.client(timeout=2) as client:
                client.get("/health")
        except httpx.ConnectError:
            return True
        return False

    wait_until(refuses_http, 5, "the edge to stop accepting connections")
    assert edge.running and not session.done.is_set()  # still draining the stream
    session.finish(30)
    assert session.end is not None and session.end["status"] == "complete", session.summary()
    assert session.frames == seconds * FPS
    assert edge.wait_exit(30) == 0
