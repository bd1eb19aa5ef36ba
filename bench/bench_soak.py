"""Soak: N real-time sessions back to back for a bounded time; frames, lateness, time to first
frame, and whether every process's memory stays flat (issue 8 §4).

    .venv/bin/python -m bench.bench_soak [--sessions 1] [--minutes 30] [--session-seconds 6]

Why: the other benchmarks run for seconds; a leak (a session, a stream, a cached tensor kept
per utterance) or a slow drift in pacing only shows after hundreds of utterances. This runs
the same stack as bench_edge (tts, audio_features, renderer and edge as `synctalk serve`
subprocesses on 127.0.0.1, the bundled `demo` avatar, piper joe) and has each of N sessions
loop requests back to back, alternating `GET /generate?text=...` and `POST
/generate-from-audio` (a piper WAV), both paced in real time, until --minutes have passed.

Reported: per session the requests, failures, frames delivered and late frames (later than
pts + 200 ms after the request's first frame); time to first frame p50/p95/p99 per kind; the
RSS of every process (with its children) after warm-up, at the end and its peak, with the
relative change. Verdict: every process's end RSS within 10% of its start RSS, the start
taken after --warmup-requests unpaced requests (models loaded, the edge's bounded store of
the last 16 results full: before that the edge grows by design).

The machine is shared: the load average is printed; absolute figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import time
from dataclasses import dataclass, field

import httpx
import psutil

from bench.bench_edge import (
    AVATAR,
    FPS,
    LATE_ALLOWANCE_S,
    TEXT,
    StackProcs,
    loadavg,
    make_wav,
    print_machine,
    running_stack,
    session_stats,
    stream,
)
from bench.soak_cli import run_soak, soak_parser

FLAT_WITHIN = 0.10  # relative RSS change allowed between start and end
SERVICES = ("tts", "audio_features", "renderer", "edge")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (a service may spawn helpers)."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0


def rss_all(stack: StackProcs) -> dict[str, int]:
    return {name: rss_bytes(proc.pid) for name, proc in zip(SERVICES, stack.procs, strict=True)}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


@dataclass
class SessionLog:
    requests: int = 0
    failures: int = 0
    frames: int = 0
    late: int = 0
    first_frames: dict[str, list[float]] = field(default_factory=lambda: {"text": [],
                                                                            "audio": []})
    errors: list[str] = field(default_factory=list)


async def session_loop(url: str, index: int, deadline: float, wav: bytes, wav_s: float,
                       text_s: float, log: SessionLog) -> None:
    """Requests back to back until the deadline, text and audio in turn."""
    limits = httpx.Limits(max_connections=2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        k = index  # sessions start on different kinds when N > 1
        while time.monotonic() < deadline:
            kind = "text" if k % 2 == 0 else "audio"
            k += 1
            if kind == "text":
                r = await stream(client, "GET", "/generate",
                                 params={"text": TEXT, "avatar": AVATAR},
                                 first_only=False, timeout_s=text_s * 3 + 60)
                expected = round(text_s * FPS)
            else:
                r = await stream(client, "POST", "/generate-from-audio",
                                 params={"avatar": AVATAR},
                                 files={"audio_file": ("speech.wav", wav, "audio/wav")},
                                 first_only=False, timeout_s=wav_s * 3 + 60)
                expected = round(wav_s * FPS)
            stats = session_stats(r, expected)
            log.requests += 1
            log.frames += stats.frames
            log.late += stats.late
            if r.first_frame_s is not None:
                log.first_frames[kind].append(r.first_frame_s)
            if r.error or r.status != 200 or not stats.frames:
                log.failures += 1
                if len(log.errors) < 5:
                    log.errors.append(f"{kind}: status {r.status} {r.error}"[:200])
                await asyncio.sleep(1.0)  # do not spin on a broken stack


async def text_seconds(url: str) -> float:
    """Duration of TEXT as the TTS speaks it (the expected length of a text request)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        reply = await client.get("/get-tts-audio", params={"text": TEXT})
        reply.raise_for_status()
        return float(reply.headers["X-Audio-Duration"])


async def warm_up(url: str, wav: bytes, requests: int) -> None:
    """Unpaced requests, text and audio in turn, before the start RSS is taken: the models
    load lazily, and the edge keeps the last 16 results (a bounded store, up to ~5 MB
    each here), so memory only reaches its steady state once that store is full."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for k in range(requests):
            params = {"avatar": AVATAR, "realtime": "false"}
            if k % 2 == 0:
                r = await stream(client, "GET", "/generate", params={**params, "text": TEXT},
                                 first_only=False, timeout_s=180)
            else:
                r = await stream(client, "POST", "/generate-from-audio", params=params,
                                 files={"audio_file": ("speech.wav", wav, "audio/wav")},
                                 first_only=False, timeout_s=180)
            if r.first_frame_s is None:
                raise RuntimeError(f"warm-up request {k} failed: {r.status} {r.error}")


async def rss_sampler(stack: StackProcs, every_s: float, peaks: dict[str, int],
                      started: float) -> None:
    """Record peaks and print a line every `every_s` (the trend, not only two points)."""
    while True:
        await asyncio.sleep(every_s)
        now = rss_all(stack)
        for name, value in now.items():
            peaks[name] = max(peaks[name], value)
        mib = ", ".join(f"{n} {v / 2**20:.0f}" for n, v in now.items())
        print(f"  t={time.monotonic() - started:6.0f} s RSS MiB: {mib}; load {loadavg()}",
              flush=True)


async def run(args: argparse.Namespace) -> int:
    print_machine()
    wav, wav_s = make_wav(args.session_seconds)
    with running_stack("bench_soak_", args.keep_logs) as stack:
        t = time.monotonic()
        await warm_up(stack.url, wav, args.warmup_requests)
        print(f"warm-up: {args.warmup_requests} unpaced requests in "
              f"{time.monotonic() - t:.0f} s", flush=True)
        text_s = await text_seconds(stack.url)
        print(f"text request {text_s:.2f} s of speech, audio request {wav_s:.2f} s",
              flush=True)
        start_rss = rss_all(stack)
        peaks = dict(start_rss)
        started = time.monotonic()
        deadline = started + args.minutes * 60
        logs = [SessionLog() for _ in range(args.sessions)]
        sampler = asyncio.ensure_future(rss_sampler(stack, args.rss_every, peaks, started))
        try:
            await asyncio.gather(*[
                session_loop(stack.url, i, deadline, wav, wav_s, text_s, logs[i])
                for i in range(args.sessions)])
        finally:
            sampler.cancel()
        elapsed = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the last streams' buffers go
        end_rss = rss_all(stack)
        for name, value in end_rss.items():
            peaks[name] = max(peaks[name], value)
        dead = [n for n, p in zip(SERVICES, stack.procs, strict=True) if p.poll() is not None]

    print(f"\n## Soak: {args.sessions} real-time session(s) for {elapsed / 60:.1f} min "
          f"(text {text_s:.1f} s and audio {wav_s:.1f} s requests in turn; late = after "
          f"pts + {LATE_ALLOWANCE_S * 1000:.0f} ms from the request's first frame)\n")
    print("| session | requests | failed | frames delivered | late frames |")
    print("|---:|---:|---:|---:|---:|")
    for i, s in enumerate(logs):
        print(f"| {i} | {s.requests} | {s.failures} | {s.frames} | {s.late} |")
    for i, s in enumerate(logs):
        for e in s.errors:
            print(f"  session {i} error: {e}")
    print("\n| time to first frame | requests | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("text", "audio"):
        values = [v for s in logs for v in s.first_frames[kind]]
        print(f"| {kind} | {len(values)} | {fmt_ms(percentile(values, 50))} | "
              f"{fmt_ms(percentile(values, 95))} | {fmt_ms(percentile(values, 99))} |")
    print("\n| process | RSS after warm-up MiB | RSS at end MiB | change | peak MiB |")
    print("|---|---:|---:|---:|---:|")
    flat = not dead
    for name in SERVICES:
        a, b = start_rss[name], end_rss[name]
        change = (b - a) / a if a else float("inf")
        flat = flat and abs(change) <= FLAT_WITHIN
        print(f"| {name} | {a / 2**20:.0f} | {b / 2**20:.0f} | {change * 100:+.1f}% | "
              f"{peaks[name] / 2**20:.0f} |")
    total_late = sum(s.late for s in logs)
    total_frames = sum(s.frames for s in logs)
    failures = sum(s.failures for s in logs)
    if dead:
        print(f"\nprocesses that exited: {', '.join(dead)}")
    print(f"\nverdict: memory {'flat' if flat else 'NOT flat'} within "
          f"{FLAT_WITHIN * 100:.0f}%; {total_frames} frames, {total_late} late "
          f"({total_late / max(total_frames, 1) * 100:.2f}%), {failures} failed requests")
    print(f"load average at end {loadavg()}; {datetime.datetime.now():%Y-%m-%d %H:%M}")
    return 0 if flat and not failures else 1


def main(argv: list[str] | None = None) -> int:
    p = soak_parser("bench.bench_soak", __doc__, 30.0, "how long the sessions loop")
    p.add_argument("--sessions", type=int, default=1, help="concurrent real-time sessions")
    p.add_argument("--session-seconds", type=float, default=6.0,
                   help="length of the uploaded WAV of each audio request")
    p.add_argument("--warmup-requests", type=int, default=18,
                   help="unpaced requests before the start RSS (fills the 16-result store)")
    p.add_argument("--rss-every", type=float, default=60.0,
                   help="seconds between RSS lines during the run")
    return run_soak(p, argv,
                    lambda a: (1 <= a.sessions <= 8 and a.minutes > 0 and a.rss_every > 0
                               and a.warmup_requests >= 1),
                    "1 <= --sessions <= 8, --minutes > 0, --rss-every > 0, --warmup-requests >= 1",
                    run)

if __name__ == "__main__":
    sys.exit(main())
