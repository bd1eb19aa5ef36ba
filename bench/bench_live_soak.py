"""Live soak (issue 14): one long `Avatar.Animate` call plus 4 concurrent calls, each fed a
distinct tone, with resource growth of every process.

    .venv/bin/python -m bench.bench_live_soak [--minutes 2] [--pause-s 20] [--tiny] [--plant-leak]

- The long call streams audio in real time for --minutes: speech (a 200 Hz tone with a level
  swing) and quiet stretches (noise a few LSB loud), in 80 ms chunks. Reported: its latency
  (a frame's arrival minus the moment its audio was sent) over the run, and the drift of that
  latency between the first and last tenth of the run: presentation time against the wall
  clock (limit 40 ms).
- 4 more calls each say 2 s of their own tone (290, 430, 570, 710 Hz), then send nothing for
  --pause-s (a push-to-talk pause: with the defaults, >= 150 s proves the keepalive policy;
  main lost such calls at 90-120 s), and again until the end.
- Every call: the audio that came back with the frames (the edge's silence padding, whole
  zero frames, left out) must be byte for byte the audio that call sent, which is both
  "audio samples = 640 x frames" and "each call gets only its own audio"; the dominant
  frequency of what came back must be the call's own tone, with no energy at the others'.
- RSS, open files and threads of every process, sampled every --sample-every s; growth per
  10 minutes from a straight-line fit over the run after its first fifth (limit 10 %).
  --plant-leak starts every process with bench/leak on PYTHONPATH and SYNCTALK_BENCH_LEAK
  set, which leaks memory, files and threads (bench/leak/sitecustomize.py): the verdict
  must flip.

The stack is bench_edge's (the four services as `synctalk serve` subprocesses, the bundled
`demo` avatar); `soak()` also runs against any edge, as the CI test does with a tiny avatar.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.soak_cli import run_soak, soak_parser
from bench.soak_metrics import (
    CallReport,
    Samples,
    SoakReport,
    growth_per_10_min,
    print_report,
    sample,
)
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2

RATE = 16000
FRAME_SAMPLES = 640
CHUNK_SAMPLES = 2 * FRAME_SAMPLES  # 80 ms: chunk ends are frame ends
CHUNK_S = CHUNK_SAMPLES / RATE
LONG_TONE_HZ = 200.0
SESSION_TONES_HZ = (290.0, 430.0, 570.0, 710.0)
BURST_S = 2.0
SPEECH_S, QUIET_S = 4.0, 3.0  # the long call's rhythm
LEAK_DIR = Path(__file__).resolve().parent / "leak"


# -- audio ----------------------------------------------------------------------------------


def tone(freq: float, start_sample: int, samples: int, level: float = 0.4) -> bytes:
    """A tone with a slow level swing, s16le; phase-continuous across calls."""
    t = (start_sample + np.arange(samples)) / RATE
    swing = 0.75 + 0.25 * np.sin(2 * np.pi * 1.5 * t)
    return (level * swing * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()


def quiet(samples: int, rng: np.random.Generator) -> bytes:
    """Noise of a few LSB: sounds silent, yet no frame of it is all zero (padding is)."""
    noise = rng.integers(1, 4, samples) * rng.choice([-1, 1], samples)
    return noise.astype("<i2").tobytes()


def strip_padding(frames_audio: list[bytes]) -> bytes:
    """What came back, less the edge's silence padding (whole zero frames)."""
    zero = bytes(FRAME_SAMPLES * 2)
    return b"".join(a for a in frames_audio if a != zero)


def band_energy(pcm: bytes, freq: float, width_hz: float = 8.0) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    if x.size == 0:
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    return float(spectrum[np.abs(freqs - freq) <= width_hz].sum())


# -- calls ------------------------------------------------------------------------------------


@dataclass
class CallLog:
    name: str
    tone_hz: float
    sent: bytearray = field(default_factory=bytearray)
    chunk_sent_at: list[float] = field(default_factory=list)  # end of chunk k handed over
    frames_audio: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def frames(self) -> int:
        return len(self.frames_audio)


async def run_call(stub: avatar_pb2_grpc.AvatarStub, log: CallLog,
                   plan: AsyncIterator[bytes], timeout_s: float) -> None:
    """One Animate call: send what `plan` yields (paced by it), collect every frame."""
    async def requests() -> AsyncIterator[avatar_pb2.AnimateRequest]:
        yield avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(sample_rate=RATE))
        async for pcm in plan:
            log.sent += pcm
            log.chunk_sent_at.append(time.monotonic())
            yield avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=pcm,
                                                                        sample_rate=RATE))

    try:
        async for reply in stub.Animate(requests(), timeout=timeout_s):
            log.arrivals.append(time.monotonic())
            log.frames_audio.append(bytes(reply.audio))
    except grpc.aio.AioRpcError as err:
        log.error = f"{err.code().name}: {err.details()}"


async def paced(pieces: Callable[[int], bytes | None], start: float) -> AsyncIterator[bytes]:
    """Chunk k (None = send nothing then) at start + k * CHUNK_S, on an absolute schedule."""
    k = 0
    while True:
        due = start + k * CHUNK_S
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        piece = pieces(k)
        k += 1
        if piece is None:
            continue
        if piece == b"":
            return
        yield piece


def long_plan(seconds: float, seed: int = 0) -> Callable[[int], bytes | None]:
    rng = np.random.default_rng(seed)
    chunks = int(seconds / CHUNK_S)
    cycle = int((SPEECH_S + QUIET_S) / CHUNK_S)
    speech = int(SPEECH_S / CHUNK_S)

    def piece(k: int) -> bytes | None:
        if k >= chunks:
            return b""
        if k % cycle < speech:
            return tone(LONG_TONE_HZ, k * CHUNK_SAMPLES, CHUNK_SAMPLES)
        return quiet(CHUNK_SAMPLES, rng)
    return piece


def session_plan(freq: float, seconds: float, pause_s: float,
                 offset_s: float) -> Callable[[int], bytes | None]:
    """2 s of the tone, then nothing for `pause_s`, again and again; starts `offset_s` in."""
    chunks = int(seconds / CHUNK_S)
    burst = int(BURST_S / CHUNK_S)
    cycle = burst + int(pause_s / CHUNK_S)
    skip = int(offset_s / CHUNK_S)
    said = [0]

    def piece(k: int) -> bytes | None:
        if k >= chunks:
            return b""
        if k < skip or (k - skip) % cycle >= burst:
            return None
        pcm = tone(freq, said[0], CHUNK_SAMPLES)
        said[0] += CHUNK_SAMPLES
        return pcm
    return piece


# -- resources ---------------------------------------------------------------------------------


# -- the soak ------------------------------------------------------------------------------------


def check_call(log: CallLog, tones: list[float]) -> CallReport:
    back = strip_padding(log.frames_audio)
    own = band_energy(back, log.tone_hz)
    others = [band_energy(back, f) for f in tones if f != log.tone_hz]
    crosstalk = max(others) / own if own > 0 else float("inf")
    return CallReport(log.name, log.frames, back == bytes(log.sent), own > 0 and crosstalk < 1,
                      crosstalk, log.error)


def latency_series(log: CallLog) -> list[tuple[float, float]]:
    """(arrival, arrival - when its audio was sent) for each frame that carries sent audio."""
    zero = bytes(FRAME_SAMPLES * 2)
    out = []
    k = 0
    for audio, arrived in zip(log.frames_audio, log.arrivals, strict=True):
        if audio == zero:
            continue
        chunk = k // 2
        if chunk < len(log.chunk_sent_at):
            out.append((arrived, arrived - log.chunk_sent_at[chunk]))
        k += 1
    return out


async def warm_up(stub: avatar_pb2_grpc.AvatarStub) -> None:
    """One short unpaced call first: the renderer loads (and may compile) its model on the
    first stream, tens of seconds on a busy CPU, which is no part of a live session's drift."""
    async def plan() -> AsyncIterator[bytes]:
        for k in range(25):
            yield tone(LONG_TONE_HZ, k * CHUNK_SAMPLES, CHUNK_SAMPLES)

    for _ in range(5):  # a just-started edge may not have connected to a service yet
        log = CallLog("warm-up", LONG_TONE_HZ)
        await run_call(stub, log, plan(), 600)
        if log.error is None and log.frames:
            return
        await asyncio.sleep(2.0)
    raise RuntimeError(f"warm-up call failed: {log.error}")


async def soak(edge_grpc: str, pids: dict[str, int], minutes: float, pause_s: float,
               sample_every_s: float) -> SoakReport:
    seconds = minutes * 60
    tones = [LONG_TONE_HZ, *SESSION_TONES_HZ]
    samples = {name: Samples() for name in pids}
    async with grpc.aio.insecure_channel(edge_grpc) as channel:
        stub = avatar_pb2_grpc.AvatarStub(channel)
        await warm_up(stub)
        start = time.monotonic() + 0.5
        logs = [CallLog("long", LONG_TONE_HZ)] + [
            CallLog(f"tone{i}", f) for i, f in enumerate(SESSION_TONES_HZ)]
        plans = [long_plan(seconds)] + [
            session_plan(f, seconds, pause_s, offset_s=0.5 * (i + 1))
            for i, f in enumerate(SESSION_TONES_HZ)]
        # Generous: a machine that cannot keep up shows as latency and drift, not as errors.
        calls = [asyncio.ensure_future(run_call(stub, log, paced(plan, start), seconds * 3 + 120))
                 for log, plan in zip(logs, plans, strict=True)]

        async def sampler() -> None:
            while True:
                now = time.monotonic()
                for name, pid in pids.items():
                    sample(pid, samples[name], now)
                await asyncio.sleep(sample_every_s)

        watcher = asyncio.ensure_future(sampler())
        try:
            await asyncio.gather(*calls)
        finally:
            watcher.cancel()
    reports = [check_call(log, tones) for log in logs]
    series = latency_series(logs[0])
    tenth = max(1, len(series) // 10)
    first = statistics.median(v for _, v in series[:tenth]) if series else float("nan")
    last = statistics.median(v for _, v in series[-tenth:]) if series else float("nan")
    worst = max((v for _, v in series), default=float("nan"))
    growth = {name: {kind: growth_per_10_min(s.t, getattr(s, kind))
                     for kind in ("rss", "fds", "threads")} for name, s in samples.items()}
    counts = {name: {kind: growth_per_10_min(s.t, getattr(s, kind)) * getattr(s, kind)[0]
                     if getattr(s, kind) else 0.0 for kind in ("fds", "threads")}
              for name, s in samples.items()}
    begin = {name: {"rss_mib": s.rss[0] / 2**20 if s.rss else 0.0,
                    "fds": s.fds[0] if s.fds else 0.0,
                    "threads": s.threads[0] if s.threads else 0.0}
             for name, s in samples.items()}
    return SoakReport(minutes, reports, first, last, worst, growth, begin, counts)


SERVICE_ORDER = ("tts", "audio_features", "renderer", "edge")  # bench_edge.StackProcs starts


def print_logs(folder: Path) -> None:
    for log in folder.glob("*.log"):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")


def long_call_limits(minutes: float) -> dict[str, str]:
    """Limits that let the long call last the whole run: one utterance is otherwise capped at
    600 s by the backends' per-stream limits and a call at 3600 s by the edge."""
    seconds = minutes * 60 + 300
    return {"SYNCTALK_SERVICES__MAX_STREAM_SECONDS": f"{max(seconds, 600):.0f}",
            "SYNCTALK_RENDERER__MAX_FRAMES": f"{max(int(seconds * 25), 25 * 600)}",
            "SYNCTALK_SERVICES__MAX_CALL_S": f"{max(seconds, 3600):.0f}"}


async def run(args: argparse.Namespace) -> int:
    from bench.bench_edge import StackProcs, print_machine

    print_machine()
    with tempfile.TemporaryDirectory(prefix="bench_live_soak_") as tmp:
        stack = StackProcs(Path(tmp))
        if args.tiny:
            from tests.support.avatars import make_avatar

            make_avatar(Path(tmp) / "avatars", "demo", num_frames=10, width=160, height=128)
            stack.env["SYNCTALK_MODELS__AVATARS_DIR"] = str(Path(tmp) / "avatars")
        stack.env.update(long_call_limits(args.minutes))
        if args.plant_leak:
            path = os.pathsep.join(p for p in (str(LEAK_DIR), os.environ.get("PYTHONPATH", ""))
                                   if p)
            stack.env.update({"PYTHONPATH": path, "SYNCTALK_BENCH_LEAK": "1"})
        try:
            started = time.monotonic()
            stack.start()
            stack.wait_healthy()
            print(f"stack healthy after {time.monotonic() - started:.1f} s", flush=True)
            pids = {name: proc.pid for name, proc in zip(SERVICE_ORDER, stack.procs, strict=True)}
            report = await soak(f"127.0.0.1:{stack.ports['edge_grpc']}", pids, args.minutes,
                                args.pause_s, args.sample_every)
        finally:
            stack.stop()
            if args.keep_logs:
                print_logs(Path(tmp))
    print_report(report, args.plant_leak)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    p = soak_parser("bench.bench_live_soak", __doc__, 2.0, "length of the run")
    p.add_argument("--pause-s", type=float, default=20.0,
                   help="silence (nothing sent) between the tone calls' bursts")
    p.add_argument("--sample-every", type=float, default=5.0,
                   help="seconds between resource samples")
    p.add_argument("--plant-leak", action="store_true",
                   help="start the stack with a planted leak: the verdict must flip")
    p.add_argument("--tiny", action="store_true",
                   help="a tiny avatar (160x128, 1/8-width U-Net) instead of the bundled demo: "
                        "the demo's U-Net renders ~33 frames/s on 2 quiet cores, short of 5 calls")
    return run_soak(p, argv,
                    lambda a: a.minutes > 0 and a.pause_s >= 0 and a.sample_every > 0,
                    "--minutes > 0, --pause-s >= 0, --sample-every > 0", run)

if __name__ == "__main__":
    sys.exit(main())
