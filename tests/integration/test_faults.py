"""Reliability under faults (issue 8 §1), with every service a real process on 127.0.0.1.

- kill -9 of each backend in the middle of a session: the client's stream ends within a
  second with an "end" message naming the service, a new request gets 503 naming it,
  /health and gRPC Animate say so, and once the service is started again on its port the
  same edge (not restarted) uses it again.
- Two renderer replicas behind one target: losing one ends only the sessions it rendered.
- A slow reader holds back its own pipeline (the edge's memory stays flat) and a concurrent
  session keeps real time.
- SIGTERM drains each service (and the edge): health turns NOT_SERVING first, the stream in
  flight finishes, new streams get UNAVAILABLE, the process exits 0.

The stack is started once for the module; a test that kills or stops a process leaves it
down and the `up` fixture of the next test starts it again on the same port.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from services.edge import mjpeg
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import (
    audio_features_pb2_grpc,
    avatar_pb2,
    avatar_pb2_grpc,
    common_pb2,
    renderer_pb2_grpc,
    tts_pb2_grpc,
)
from synctalk.rpc.server import GrpcServer
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.avatars import make_avatar
from tests.support.faults import (
    FPS,
    SPEECH,
    end_of,
    figure,
    log_events,
    replica_of,
    sees,
    short_generation,
    upload,
    warm_renderer,
)
from tests.support.paths import free_port
from tests.support.processes import (
    AVATAR,
    BACKENDS,
    SERVING,
    AvStream,
    EdgeProcess,
    HeldCall,
    ProcessStack,
    ServiceProcess,
    grpc_health,
    wait_until,
)
from tests.support.renderer import config as render_config
from tests.support.renderer import feature_request
from tests.support.tts import config as tts_config
from tests.support.tts import text as tts_text

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LONG_UPLOAD_S = 40.0
MB = 1024 * 1024
# An avatar whose JPEG frames weigh what a real 1080p avatar's do (~240 KB), so a stalled
# client fills the socket buffers within a few frames and backpressure shows within seconds.
HEAVY = "heavy"
BESIDE_AT_S = 5  # when the concurrent session runs, after the slow stream has stalled


def make_heavy_avatar(store: Path) -> None:
    path = make_avatar(store, HEAVY, num_frames=4, width=1280, height=720)
    frames = np.load(path / "frames.npy").astype(np.int16)
    grain = np.random.default_rng(1).integers(-20, 21, frames.shape)
    np.save(path / "frames.npy", np.clip(frames + grain, 0, 255).astype(np.uint8))


@dataclass
class Faults:
    stack: ProcessStack
    edge: EdgeProcess  # renderer target: replica 0 only
    pair: EdgeProcess  # renderer target: replicas 0 and 1
    warm: set[int] = field(default_factory=set)  # pids of renderers with the model loaded


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    stack = ProcessStack(tmp_path_factory.mktemp("faults"), renderers=2,
                         SERVER__DRAIN_GRACE_S="30")
    make_heavy_avatar(stack.root / "avatars")
    with stack.running():
        edge = stack.add_edge([stack.renderers[0]], label="edge")
        pair = stack.add_edge(stack.renderers, label="edge_pair")
        for proc in stack.processes:
            proc.start()
        for proc in stack.processes:
            proc.wait_ready()
        yield Faults(stack, edge, pair)


def ensure(faults: Faults, procs: list[ServiceProcess], edge: EdgeProcess,
           services: tuple[str, ...] = BACKENDS) -> None:
    """Start again (at once, on their ports) those of `procs` an earlier test killed or
    stopped, warm any new renderer, and wait until `edge` sees `services` ok."""
    down = [proc for proc in procs if not proc.running]
    for proc in down:
        proc.start()
    for proc in down:
        proc.wait_ready()
    for proc in procs:
        if proc in faults.stack.renderers and proc.pid not in faults.warm:
            warm_renderer(proc)
            faults.warm.add(proc.pid)
    wait_until(lambda: sees(edge, services), 15, f"{edge.label} to see {services}")


@pytest.fixture
def up(faults: Faults) -> Faults:
    """The backends and the edge with one renderer replica serving."""
    backends = faults.stack.backends
    ensure(faults, [*(backends[name] for name in BACKENDS), faults.edge], faults.edge)
    return faults


# -- requests -----------------------------------------------------------------------------


def long_session(edge: EdgeProcess, service: str) -> AvStream:
    """A realtime session that keeps `service` busy for many seconds."""
    if service == "tts":
        return AvStream(edge, "/generate", json={"text": SPEECH})
    return AvStream(edge, "/generate-from-audio", **upload(LONG_UPLOAD_S))


def animate(edge: EdgeProcess, service: str) -> grpc.RpcError | None:
    """A short Avatar.Animate call (text for tts, else audio); its error, if any."""
    first = avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(avatar=AVATAR))
    if service == "tts":
        rest = [avatar_pb2.AnimateRequest(text=b"Hello there.")]
    else:
        pcm = tone_pcm(0.4)
        rest = [avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(
            pcm=pcm[i : i + 3200], sample_rate=16000, start_sample=i // 2))
            for i in range(0, len(pcm), 3200)]
    with grpc.insecure_channel(edge.grpc_address) as channel:
        try:
            frames = list(avatar_pb2_grpc.AvatarStub(channel).Animate(iter([first, *rest]),
                                                                      timeout=30))
        except grpc.RpcError as err:
            return err
    assert frames
    return None


# -- reconnection -------------------------------------------------------------------------


def test_a_channel_reconnects_within_a_second_however_long_the_service_was_down() -> None:
    """`dial` retries a lost service at most every second. With gRPC's default backoff
    (1 s growing 1.6x to 120 s, +-20 %), after 11 s down the next attempt would come
    1.4 to 7.8 s after the service is back, and minutes late after a longer outage."""
    down_s = 11.2

    async def main() -> float:
        port = free_port()
        async with dial(f"127.0.0.1:{port}") as channel:
            channel.get_state(try_to_connect=True)
            await asyncio.sleep(down_s)  # attempts fail, the backoff grows
            server = GrpcServer([], lambda server: None, port=port)
            await server.start()
            back = time.monotonic()
            try:
                while channel.get_state() != grpc.ChannelConnectivity.READY:
                    assert time.monotonic() - back < 15, "never reconnected"
                    await asyncio.sleep(0.01)
                return time.monotonic() - back
            finally:
                await server.server.stop(0)

    reconnect_s = asyncio.run(main())
    figure("channel.reconnect_after_service_back_s", reconnect_s, f"s (after {down_s:g} s down)")
    assert reconnect_s < 1.4


# -- kill -9 ------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["renderer", "audio_features", "tts"])
def test_kill_9_mid_session_ends_the_stream_naming_the_service_and_the_edge_recovers(
    up: Faults, service: str
) -> None:
    edge, proc = up.edge, up.stack.backends[service]
    session = long_session(edge, service)
    session.wait_frames(5)
    assert not session.done.is_set(), session.summary()

    killed_at = time.monotonic()
    proc.kill()
    session.finish(10)
    assert session.end is not None and session.end_at is not None, session.summary()
    assert session.end["status"] == "error", session.summary()
    assert session.end["service"] == service, session.summary()
    assert session.end["http_status"] == 503, session.summary()
    assert session.end["error"] == f"{service} service unavailable"
    error_s = session.end_at - killed_at
    figure(f"kill_{service}.stream_error_after_kill_s", error_s, "s")
    assert error_s < 1.0
    assert session.frames < LONG_UPLOAD_S * FPS  # it really was cut short

    # While it is down: a new request is refused at once, naming the service.
    started = time.monotonic()
    refused = short_generation(edge, service)
    figure(f"kill_{service}.refusal_s", time.monotonic() - started, "s")
    assert refused.status_code == 503, refused.text
    assert refused.json() == {"detail": f"{service} service unavailable", "service": service}
    assert refused.headers["retry-after"] == "5"
    health = edge.health()
    assert health[service] == "unavailable"
    assert all(state == "ok" for name, state in health.items() if name != service), health
    err = animate(edge, service)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == f"{service} service unavailable"

    # Started again on the same port: the same edge uses it again.
    restarted = time.monotonic()
    proc.start()
    proc.wait_ready()
    ready_s = time.monotonic() - restarted
    back_s = wait_until(lambda: edge.health()[service] == "ok", 10, f"the edge to see {service}")
    figure(f"kill_{service}.restart_ready_s", ready_s, "s")
    figure(f"kill_{service}.edge_reconnect_after_ready_s", back_s, "s")
    assert back_s < 3.0
    reply = short_generation(edge, service)
    assert reply.status_code == 200, reply.text
    assert end_of(reply)["status"] == "complete"
    assert animate(edge, service) is None


# -- renderer replicas --------------------------------------------------------------------


def test_killing_one_renderer_replica_ends_only_its_sessions(up: Faults) -> None:
    edge = up.pair
    ensure(up, [*up.stack.renderers, edge], edge)
    seconds = 3.0
    sessions: list[tuple[AvStream, ServiceProcess]] = []
    while len({proc.label for _, proc in sessions}) < 2:
        assert len(sessions) < 6, "round_robin never used the second replica"
        session = AvStream(edge, "/generate-from-audio", **upload(seconds))
        session.wait_frames(1)
        assert session.session_id is not None
        sessions.append((session, replica_of(up.stack.renderers, session.session_id)))
    victim = sessions[0][1]
    for session, _ in sessions:
        session.wait_frames(3)

    killed_at = time.monotonic()
    victim.kill()
    for session, replica in sessions:
        session.finish(30)
        assert session.end is not None, session.summary()
        if replica is victim:
            assert session.end["status"] == "error" and session.end["service"] == "renderer"
            assert session.end_at is not None and session.end_at - killed_at < 1.0
            figure("replica.victim_error_after_kill_s", session.end_at - killed_at, "s")
        else:
            assert session.end["status"] == "complete", session.summary()
            assert session.frames == seconds * FPS
    survivor = next(proc for proc in up.stack.renderers if proc is not victim)

    # New sessions all go to the replica that is left.
    for _ in range(4):
        reply = short_generation(edge, "renderer")
        assert reply.status_code == 200, reply.text
        assert end_of(reply)["status"] == "complete"
        assert replica_of(up.stack.renderers, reply.headers["x-session-id"]) is survivor
    assert edge.health()["renderer"] == "ok"  # one replica serving is enough


# -- slow reader --------------------------------------------------------------------------


class SlowReader:
    """An HTTP client that takes the MJPEG stream one part per call, on a socket with a tiny
    receive buffer, so the edge cannot park the stream in the kernel."""

    def __init__(self, edge: EdgeProcess, path: str, body: bytes, content_type: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", edge.port))
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        self.sock.sendall(head.encode() + body)
        self.buf = b""
        self.parts = 0

    def headers(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}

    def read_part(self) -> None:
        """Read on until one more MJPEG part has started."""
        marker = f"--{mjpeg.BOUNDARY}\r\n".encode("ascii")
        target = self.parts + 1
        while self.buf.count(marker) < target:
            self._recv()
        self.parts = target

    def _recv(self) -> None:
        data = self.sock.recv(4096)
        assert data, "the edge closed the slow stream"
        self.buf += data

    def close(self) -> None:
        self.sock.close()


def realtime_session(edge: EdgeProcess, seconds: float) -> float:
    """Seconds from request to the end of a complete realtime av session of `seconds` of audio."""
    session = AvStream(edge, "/generate-from-audio", **upload(seconds)).finish(30)
    assert session.end is not None and session.end["status"] == "complete", session.summary()
    assert session.frames == seconds * FPS and session.end_at is not None
    return session.end_at - session.started_at


def frames_delivered(edge: EdgeProcess) -> float:
    """Frames the edge has handed to HTTP response bodies so far (its /metrics counter)."""
    with edge.client(timeout=5) as client:
        text = client.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("synctalk_edge_frames_total{"))


def test_a_slow_reader_is_held_back_without_memory_growth_or_slowing_others(up: Faults) -> None:
    edge = up.edge
    upload_s, read_s, normal_s = 60.0, 8, 2.0
    alone_s = realtime_session(edge, normal_s)  # the same session with no slow reader about
    rss_before = edge.rss_bytes()
    # As fast as it renders (realtime=0), heavy frames: only backpressure can hold it back.
    slow = SlowReader(edge, f"/generate-from-audio?realtime=0&avatar={HEAVY}",
                      wav_bytes(tone_pcm(upload_s)), "audio/wav")
    try:
        status, headers = slow.headers()
        assert status == 200
        slow_id = headers["x-session-id"]
        rss, delivered = [rss_before], {}
        beside_s = None
        for second in range(1, read_s + 1):  # one frame a second
            slow.read_part()
            if second == BESIDE_AT_S:
                beside_s = realtime_session(edge, normal_s)
            else:
                time.sleep(1.0)
            rss.append(edge.rss_bytes())
            delivered[second] = frames_delivered(edge)
    finally:
        slow.close()

    # The reader took a frame a second, and so, once the buffers between were full, did
    # the edge (the concurrent session's frames aside): backpressure, not buffering.
    taken = delivered[read_s] - delivered[BESIDE_AT_S - 1] - normal_s * FPS
    figure("slow_reader.frames_taken_by_edge_in_last_s",
           taken, f"frames in {read_s - BESIDE_AT_S + 1} s")
    assert taken <= read_s - BESIDE_AT_S + 1 + 8

    # A realtime session beside the stalled one keeps real time (the av stream leads by
    # up to 1 s, so it ends about 1 s after its first frame).
    figure("slow_reader.normal_session_alone_s", alone_s, f"s (for {normal_s:g} s of audio)")
    figure("slow_reader.normal_session_beside_slow_s", beside_s, "s")
    assert beside_s is not None
    assert beside_s < alone_s + 1.0
    assert beside_s < normal_s + 2.0

    # The edge's memory stayed flat while the reader stalled.
    growth = max(rss) - rss_before
    figure("slow_reader.edge_rss_before_mb", rss_before / MB, "MB")
    figure("slow_reader.edge_rss_growth_mb", growth / MB, "MB")
    assert growth < 50 * MB

    # The renderer rendered a bounded lead of what the reader took, not the whole upload.
    def slow_end() -> dict[str, Any] | None:
        return next((r for r in log_events(edge, "utterance.end")
                     if r.get("session_id") == slow_id), None)

    wait_until(slow_end, 10, "the slow session's end")
    record = slow_end()
    assert record is not None and record["outcome"] == "disconnected"
    figure("slow_reader.frames_read", slow.parts, "frames")
    figure("slow_reader.frames_rendered", record["frames"], f"frames of {upload_s * FPS:g}")
    assert slow.parts >= read_s
    assert record["frames"] < 250


# -- SIGTERM ------------------------------------------------------------------------------


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
