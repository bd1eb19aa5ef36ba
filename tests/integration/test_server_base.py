"""The gRPC server base (synctalk/rpc/server.py) seen from outside, on the real TTS service:
reflection through grpcurl, health, SIGTERM drain, deadlines and client cancellation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from synctalk.config import load_settings
from synctalk.rpc.gen.lipsync.v1 import tts_pb2, tts_pb2_grpc
from synctalk.rpc.server import GrpcServer
from tests.support.paths import ROOT, free_port
from tests.support.processes import HeldCall, wait_until
from tests.support.tts import config, running_server, text

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
HEALTH = health_pb2.HealthCheckRequest


def held_synthesis(stub: tts_pb2_grpc.TextToSpeechStub, sentence: str, *, timeout_s: float,
                   deterministic: bool = False) -> HeldCall:
    """A Synthesize call sent its config and `sentence`, held open for more."""
    held = HeldCall(stub.Synthesize, config(deterministic=deterministic), timeout_s=timeout_s)
    held.send(text(sentence))
    return held


def health_status(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(HEALTH(service=""), timeout=5).status


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m synctalk serve tts --port P` as a subprocess, ready when health says SERVING."""
    port = free_port()
    log_path = tmp_path / "tts.log"
    env = {**os.environ, "SYNCTALK_SERVER__DRAIN_GRACE_S": "30", "SYNCTALK_LOG_FORMAT": "json"}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "synctalk", "serve", "tts", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file,
        )
    address = f"127.0.0.1:{port}"

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {log_path.read_text()}")
        try:
            with grpc.insecure_channel(address) as channel:
                return health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    try:
        wait_until(serving, 60, "the tts server to serve")
        yield process, address
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def grpcurl(*args: str) -> str:
    result = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_reflection_lists_and_describes_the_services(serve_process) -> None:
    _, address = serve_process
    services = grpcurl(address, "list").split()
    assert {"lipsync.v1.TextToSpeech", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    tts = grpcurl(address, "describe", "lipsync.v1.TextToSpeech")
    assert "rpc Synthesize ( stream .lipsync.v1.SynthesizeRequest ) returns ( stream .lipsync.v1.AudioChunk );" in tts
    assert "rpc ListVoices ( .lipsync.v1.ListVoicesRequest ) returns ( .lipsync.v1.ListVoicesResponse );" in tts
    request = grpcurl(address, "describe", "lipsync.v1.SynthesizeRequest")
    for field in ("oneof payload", ".lipsync.v1.SynthesizeConfig config = 1;", "bytes text = 2;", "bool flush = 3;"):
        assert field in request
    health = grpcurl("-d", '{"service":"lipsync.v1.TextToSpeech"}', address, "grpc.health.v1.Health/Check")
    assert '"SERVING"' in health


def test_sigterm_drains_in_flight_streams_and_refuses_new_ones(serve_process) -> None:
    process, address = serve_process
    with grpc.insecure_channel(address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        held = held_synthesis(stub, "This sentence is spoken before the signal. ",
                              timeout_s=60, deterministic=True)
        wait_until(lambda: held.responses or held.done.is_set(), 30, "first audio")
        assert held.error is None

        process.send_signal(signal.SIGTERM)
        wait_until(lambda: health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING,
                   10, "NOT_SERVING")
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Synthesize(iter([config(), text("Too late.")]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert process.poll() is None

        held.send(text("And this one after it."))
        held.close()
        assert held.done.wait(30)
        assert held.error is None
        assert [c.text for c in held.responses if c.end_of_sentence] == [
            "This sentence is spoken before the signal.", "And this one after it."]
    assert process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def server() -> Iterator[GrpcServer]:
    with running_server(load_settings()) as running:
        yield running


def test_stream_that_never_ends_gets_deadline_exceeded(server: GrpcServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        held = held_synthesis(stub, "Speak this and then wait forever. ", timeout_s=1.0)
        assert held.done.wait(15)
        held.close()
        assert held.error is not None and held.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: server.tracker.inflight == 0, 10, "the server to end the stream")
        assert list(stub.Synthesize(iter([config(), text("Still here.")]), timeout=30))


def test_client_cancel_ends_the_stream_and_the_server_survives(server: GrpcServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        held = held_synthesis(stub, "One sentence arrives. ", timeout_s=60)
        wait_until(lambda: held.responses, 30, "first audio")
        held.call.cancel()
        assert held.done.wait(10)
        held.close()
        assert held.error is not None and held.error.code() == grpc.StatusCode.CANCELLED
        wait_until(lambda: server.tracker.inflight == 0, 10, "the server to end the stream")
        voices = stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10).voices
        assert voices and list(stub.Synthesize(iter([config(), text("Still here.")]), timeout=30))
