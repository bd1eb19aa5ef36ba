"""Hangs, silences and a bad network, on real processes (issue 14).

- silence: an `Animate` call silent for many keepalive windows (shrunk to 0.5 s so CI proves
  the policy in seconds) then speaking again completes; an idle call ends at
  `services.idle_timeout_s` and a long one at `services.max_call_s`, DEADLINE_EXCEEDED
  naming the limit;
- hang, not death: SIGSTOP of each backend mid-session: the edge's /health reports it within
  2 s, the session ends naming it within 5 s, and within 3 s of SIGCONT it serves again;
- the network between the edge and each backend, through an in-test TCP proxy: a blackhole
  (connection open, nothing delivered) ends the session naming the service within 10 s;
  50 ms of delay keeps late frames at or under 1 % of a real-time session; 200 ms of delay
  and a bandwidth cap still deliver complete sessions.

After every test: no active session left, no file left in the processes' temp directory,
and the next session succeeds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2
from tests.support.audio import tone_pcm
from tests.support.faults import (
    FPS,
    assert_error_end,
    end_of,
    figure,
    long_session,
    sees,
    short_generation,
    upload,
    warm_renderer,
)
from tests.support.processes import (
    AVATAR,
    BACKENDS,
    AvStream,
    EdgeProcess,
    HeldCall,
    ProcessStack,
    wait_until,
)
from tests.support.proxy import FaultProxy

KEEPALIVE_S = 0.5  # the clients' ping interval in this stack (default 30 s)
IDLE_S, MAX_CALL_S = 1.5, 4.0  # the `short` edge's limits (defaults 300 s and 3600 s)
# The proxied edge's stall deadline (default 30 s; a long sentence takes TTS seconds here).
STAGE_TIMEOUT_S = 10.0
LATE_ALLOWANCE_S = 0.2  # as bench/bench_edge.py: later than pts + 200 ms is late
CHUNK_BYTES = 3200  # 0.1 s of 16 kHz s16le
LONG_UPLOAD_S = 30.0


@dataclass
class Hang:
    stack: ProcessStack
    edge: EdgeProcess  # every backend behind a FaultProxy
    short: EdgeProcess  # direct, with short idle and lifetime limits
    proxies: dict[str, FaultProxy]
    baseline_tmp: set[Path]  # what libraries put in TMPDIR at start-up (a session marker)


@pytest.fixture(scope="module")
def hang(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hang]:
    root = tmp_path_factory.mktemp("hang")
    (root / "tmp").mkdir()
    stack = ProcessStack(
        root,
        TMPDIR=str(root / "tmp"),
        SERVER__TRANSPORT__KEEPALIVE_TIME_S=str(KEEPALIVE_S),
        SERVER__TRANSPORT__MIN_PING_INTERVAL_S="0.2",
        SERVER__TRANSPORT__KEEPALIVE_TIMEOUT_S="5",
    )
    stack.env["TMPDIR"] = str(root / "tmp")
    proxies = {name: FaultProxy(stack.backends[name].address).start() for name in BACKENDS}
    try:
        with stack.running():
            edge = stack.add_edge(label="edge_proxied",
                                  targets={name: p.address for name, p in proxies.items()},
                                  SERVICES__STAGE_TIMEOUT_S=str(STAGE_TIMEOUT_S))
            short = stack.add_edge(label="edge_short", SERVICES__IDLE_TIMEOUT_S=str(IDLE_S),
                                   SERVICES__MAX_CALL_S=str(MAX_CALL_S))
            for proc in stack.processes:
                proc.start()
            for proc in stack.processes:
                proc.wait_ready()
            warm_renderer(stack.backends["renderer"])
            yield Hang(stack, edge, short, proxies, set((root / "tmp").iterdir()))
    finally:
        for proxy in proxies.values():
            proxy.close()


def active_sessions(edge: EdgeProcess) -> int:
    with edge.client(timeout=5) as client:
        return int(client.get("/health").json()["active_sessions"])


def after_fault(hang: Hang, edge: EdgeProcess) -> None:
    """Heal everything, then: no session left open, no temp file left, the next session works."""
    for proxy in hang.proxies.values():
        proxy.heal()
    for name in BACKENDS:
        hang.stack.backends[name].signal(signal.SIGCONT)
    wait_until(lambda: active_sessions(edge) == 0, 10, f"{edge.label}'s sessions to end")
    wait_until(lambda: sees(edge), 10, f"{edge.label} to see every backend again")
    reply = short_generation(edge, "renderer")
    assert reply.status_code == 200, reply.text
    assert end_of(reply)["status"] == "complete"
    left = set((hang.stack.root / "tmp").iterdir()) - hang.baseline_tmp
    assert not left, f"temp files left behind: {left}"


@pytest.fixture
def ok(hang: Hang) -> Iterator[Hang]:
    """The proxied edge with every backend reachable; checked clean after the test."""
    wait_until(lambda: sees(hang.edge), 15, "the proxied edge to see every backend")
    yield hang
    after_fault(hang, hang.edge)


@pytest.fixture
def ok_short(hang: Hang) -> Iterator[Hang]:
    """The edge with short call limits; checked clean after the test."""
    yield hang
    after_fault(hang, hang.short)


# -- Animate: silence, idle, lifetime -------------------------------------------------------


def audio(pcm: bytes) -> list[avatar_pb2.AnimateRequest]:
    return [avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(
        pcm=pcm[i : i + CHUNK_BYTES], sample_rate=16000)) for i in range(0, len(pcm), CHUNK_BYTES)]


def open_animate(edge: EdgeProcess, timeout_s: float = 60) -> tuple[grpc.Channel, HeldCall]:
    channel = grpc.insecure_channel(edge.grpc_address)
    first = avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(avatar=AVATAR))
    return channel, HeldCall(avatar_pb2_grpc.AvatarStub(channel).Animate, first,
                             timeout_s=timeout_s)


def assert_ended_by(call: HeldCall, ended_s: float, limit: str, limit_s: float,
                    slack_s: float) -> None:
    """The call ended DEADLINE_EXCEEDED naming `services.<limit>`, at the limit or up to
    `slack_s` after it."""
    figure(f"animate.{limit.removesuffix('_s')}_end_s", ended_s, f"s ({limit}={limit_s})")
    assert call.error is not None
    assert call.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"services.{limit}" in call.error.details()
    assert limit_s <= ended_s < limit_s + slack_s


def test_a_silent_animate_call_outlives_many_keepalive_windows_then_speaks_again(ok: Hang) -> None:
    """On main, a silent call died at 90-120 s (too_many_pings); here the clients ping every
    0.5 s, so 4 s of silence spans 8 windows (and ~20 of the servers' minimum interval)."""
    silence_s = 8 * KEEPALIVE_S
    channel, call = open_animate(ok.edge)
    with channel:
        call.send(*audio(tone_pcm(1.0)))
        wait_until(lambda: len(call.responses) >= FPS or call.done.is_set(), 20, "the first second")
        time.sleep(silence_s)
        assert not call.done.is_set(), call.error
        before = len(call.responses)
        call.send(*audio(tone_pcm(1.0, freq=330.0)))
        call.close()
        assert call.done.wait(30), "the call never ended"
    assert call.error is None, call.error
    assert len(call.responses) >= before + FPS
    indices = [r.frame.index for r in call.responses]
    assert indices == list(range(len(indices)))
    assert all(len(r.audio) == 1280 for r in call.responses)


def test_an_idle_animate_call_ends_at_the_idle_timeout_naming_it(ok_short: Hang) -> None:
    channel, call = open_animate(ok_short.short)
    started = time.monotonic()
    with channel:
        call.send(*audio(tone_pcm(0.4)))
        assert call.done.wait(10), "the idle call was never ended"
        ended_s = time.monotonic() - started
        call.close()
    assert_ended_by(call, ended_s, "idle_timeout_s", IDLE_S, slack_s=2.0)
    assert call.responses, "the audio sent before the pause was not animated"


def test_an_animate_call_ends_at_its_maximum_lifetime_naming_it(ok_short: Hang) -> None:
    """A client that never pauses still cannot hold its slot past `max_call_s`."""
    channel, call = open_animate(ok_short.short)
    started = time.monotonic()
    with channel:
        pcm = tone_pcm(0.2)
        while not call.done.is_set() and time.monotonic() - started < MAX_CALL_S + 5:
            call.send(*audio(pcm))
            time.sleep(0.2)
        ended_s = time.monotonic() - started
        call.close()
    assert_ended_by(call, ended_s, "max_call_s", MAX_CALL_S, slack_s=1.5)


# -- hang, not death ---------------------------------------------------------------------------


def health_of(edge: EdgeProcess, service: str) -> str:
    return edge.health()[service]


@pytest.mark.parametrize("service", BACKENDS)
def test_a_stopped_backend_is_reported_its_sessions_end_naming_it_and_it_comes_back(
    ok: Hang, service: str
) -> None:
    edge, proc = ok.edge, ok.stack.backends[service]
    session = long_session(edge, service, LONG_UPLOAD_S)
    stopped_at = time.monotonic()
    proc.signal(signal.SIGSTOP)
    try:
        seen_s = wait_until(lambda: health_of(edge, service) != "ok", 5, f"/health to flag {service}")
        session.finish(15)
        assert_error_end(session, service)
        ended_s = session.end_at - stopped_at
    finally:
        proc.signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    back_s = wait_until(lambda: health_of(edge, service) == "ok", 10, f"{service} back")
    reply = short_generation(edge, service)
    served_s = time.monotonic() - resumed_at
    figure(f"sigstop_{service}.health_flags_s", seen_s, "s")
    figure(f"sigstop_{service}.session_ends_s", ended_s, "s")
    figure(f"sigstop_{service}.serving_again_after_sigcont_s", served_s, "s")
    assert session.end["http_status"] == 503, session.summary()
    assert service in session.end["error"]
    assert seen_s < 2.0
    assert ended_s < 5.0
    assert back_s < 3.0
    assert reply.status_code == 200, reply.text
    assert end_of(reply)["status"] == "complete"
    assert served_s < 3.0


# -- the network between the edge and a backend ---------------------------------------------


@pytest.mark.parametrize("service", BACKENDS)
def test_a_blackholed_link_ends_the_session_naming_the_service_within_10_s(
    ok: Hang, service: str
) -> None:
    session = long_session(ok.edge, service, LONG_UPLOAD_S)
    cut_at = time.monotonic()
    with ok.proxies[service].fault(blackhole=True):
        session.finish(15)
    assert_error_end(session, service)
    error_s = session.end_at - cut_at
    figure(f"blackhole_{service}.session_ends_s", error_s, "s")
    assert error_s < 10.0


def lateness(session: AvStream) -> list[float]:
    t0 = session.frame_times[0]
    return [(t - t0) - i / FPS for i, t in enumerate(session.frame_times)]


def late_share(session: AvStream, seconds: float) -> float:
    assert session.end is not None and session.end["status"] == "complete", session.summary()
    assert session.frames == seconds * FPS
    return sum(1 for x in lateness(session) if x > LATE_ALLOWANCE_S) / session.frames


def test_50_ms_of_delay_to_every_backend_keeps_a_real_time_session_on_time(ok: Hang) -> None:
    """Late frames stay within 1 % more than the same session gets on an undelayed link,
    measured just before (on a quiet machine that share is 0; on a saturated 2-core CI
    runner CPU starvation alone makes frames late, and that is not the link's doing)."""
    seconds = 3.0
    baseline = late_share(AvStream(ok.edge, "/generate-from-audio", **upload(seconds))
                          .finish(30), seconds)
    with ok.proxies["renderer"].fault(delay_s=0.05), \
            ok.proxies["audio_features"].fault(delay_s=0.05):
        delayed = late_share(AvStream(ok.edge, "/generate-from-audio", **upload(seconds))
                             .finish(30), seconds)
    figure("delay_0ms.late_frame_share", baseline, "")
    figure("delay_50ms.late_frame_share", delayed, "")
    assert delayed <= baseline + 0.01


def test_200_ms_of_delay_and_a_bandwidth_cap_still_deliver_whole_sessions(ok: Hang) -> None:
    with ok.proxies["renderer"].fault(delay_s=0.2), ok.proxies["tts"].fault(delay_s=0.2):
        reply = short_generation(ok.edge, "tts")
    assert reply.status_code == 200, reply.text
    assert end_of(reply)["status"] == "complete"
    # 100 KB/s: well under what a 25 fps JPEG stream of this avatar needs in bursts.
    with ok.proxies["renderer"].fault(rate_bytes_s=100_000), \
            ok.proxies["audio_features"].fault(rate_bytes_s=100_000):
        reply = short_generation(ok.edge, "renderer")
    assert reply.status_code == 200, reply.text
    assert end_of(reply)["status"] == "complete"
