"""Mouth-to-ear latency of the live microphone WebSocket (/live) with the demo avatar (issue 19).

    .venv/bin/python -m bench.bench_live [--minutes 1] [--window-s 30] [--max-lag-s 0.3] [--keep-logs]

Why: a live avatar is only usable if the mouth follows the voice within about half a second
and that delay does not creep up over a long conversation. This starts the real stack
(tts, audio_features, renderer and edge as `synctalk serve SERVICE` subprocesses, the
bundled `demo` avatar, production settings) and plays piper speech into /live from a
websockets client in real time, in 20 ms chunks as the page's AudioWorklet sends them. For
every frame that comes back it takes the middle sample of the frame's 40 ms of audio (its
`input_sample` + 320) and measures

    sent -> received: the moment that sample was sent to the moment its frame arrived;
    mouth-to-ear:     that plus the page's live jitter buffer (LIVE_LEAD_S = 80 ms in
                      services/edge/static/player.js), i.e. when the page paints the frame and
                      plays its sound, if it paints on time (the browser test
                      tests/integration/test_web_live.py measures the painted figure in Chromium).

It prints the median and p95 of both, frames received and dropped (by the edge, reported in
the frame headers), and the median per window of `--window-s`; drift is the last full
window's median minus the first's (the first 5 s, model warm-up, are left out). A 10-minute
run (`--minutes 10`) is the drift check the issue asks for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect

from bench.bench_edge import loadavg, make_wav, print_machine, running_stack
from services.edge import stream_format

CHUNK = 320  # samples per message: 20 ms at 16 kHz
PAGE_LEAD_S = 0.08  # LIVE_LEAD_S of the page's live player
WARMUP_S = 5.0


@dataclass
class Run:
    sent: list[tuple[int, float]] = field(default_factory=list)  # (end sample, monotonic)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds)
    frames: int = 0
    dropped: int = 0
    closed: str = ""

    def sent_at(self, sample: int, cursor: list[int]) -> float | None:
        """When input `sample` was sent (chunks are searched from `cursor` on)."""
        i = cursor[0]
        while i < len(self.sent) and self.sent[i][0] <= sample:
            i += 1
        cursor[0] = i
        if i >= len(self.sent):
            return None
        end, t = self.sent[i]
        return t - (end - sample) / 16000


async def play(url: str, pcm: bytes, seconds: float) -> Run:
    run = Run()
    total = int(seconds * 16000)
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "config"}))

        async def send() -> None:
            started = time.monotonic()
            pos = 0
            while pos < total:
                start = (pos * 2) % len(pcm)
                piece = (pcm[start:] + pcm)[: CHUNK * 2]
                await ws.send(piece)
                pos += CHUNK
                run.sent.append((pos, time.monotonic()))
                await asyncio.sleep(max(0.0, started + pos / 16000 - time.monotonic()))
            await asyncio.sleep(1.0)
            await ws.close()

        async def receive() -> None:
            cursor = [0]
            try:
                async for data in ws:
                    now = time.monotonic()
                    for header, _ in stream_format.parse(data):  # type: ignore[arg-type]
                        if header["type"] != "frame":
                            continue
                        run.frames += 1
                        run.dropped = header["dropped"]
                        sample = header["input_sample"]
                        if sample is None:
                            continue
                        at = run.sent_at(sample + 320, cursor)
                        if at is not None:
                            run.latencies.append((now, now - at))
            finally:
                run.closed = f"{ws.close_code} {ws.close_reason or ''}".strip()

        await asyncio.gather(send(), receive())
    return run


def ms(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) * 1000 if values else float("nan")


def report(run: Run, seconds: float, window_s: float) -> None:
    t0 = run.sent[0][1] if run.sent else 0.0
    steady = [lat for at, lat in run.latencies if at - t0 >= WARMUP_S]
    print(f"\n{seconds:.0f} s of speech in real time; load average now {loadavg()}")
    print(f"frames received {run.frames}, dropped by the edge {run.dropped} "
          f"({run.dropped / max(1, run.frames + run.dropped):.1%}); socket closed {run.closed}")
    if not steady:
        print("no frames after the warm-up")
        return
    print(f"sent -> received  median {ms(steady, 0.5):.0f} ms  p95 {ms(steady, 0.95):.0f} ms")
    ear = [lat + PAGE_LEAD_S for lat in steady]
    print(f"mouth-to-ear      median {ms(ear, 0.5):.0f} ms  p95 {ms(ear, 0.95):.0f} ms")
    windows: dict[int, list[float]] = {}
    for at, lat in run.latencies:
        if at - t0 >= WARMUP_S:
            windows.setdefault(int((at - t0 - WARMUP_S) // window_s), []).append(lat)
    full = [k for k in sorted(windows) if (k + 1) * window_s + WARMUP_S <= seconds]
    print("median per window: " + ", ".join(
        f"{k * window_s + WARMUP_S:.0f}s {statistics.median(windows[k]) * 1000:.0f}"
        for k in sorted(windows)))
    if len(full) >= 2:
        drift = (statistics.median(windows[full[-1]]) - statistics.median(windows[full[0]]))
        print(f"drift (last full window - first) {drift * 1000:+.0f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bench_live", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0, help="how long to talk")
    p.add_argument("--window-s", type=float, default=30.0, help="drift window")
    p.add_argument("--max-lag-s", type=float, default=None,
                   help="services.live_max_lag_s of the edge (default: its default, 0.3)")
    p.add_argument("--keep-logs", action="store_true",
                   help="print the tail of each service's log at the end")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.window_s <= 0:
        p.error("--minutes and --window-s must be > 0")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.max_lag_s is not None:
        os.environ["SYNCTALK_SERVICES__LIVE_MAX_LAG_S"] = str(args.max_lag_s)
    print_machine()
    wav, duration = make_wav(20.0)
    pcm = wav[44:]
    seconds = args.minutes * 60
    with running_stack("bench-live-", args.keep_logs) as stack:
        url = stack.url.replace("http://", "ws://") + "/live"
        asyncio.run(play(url, pcm, 3.0))  # warm-up: the renderer loads the demo model
        run = asyncio.run(play(url, pcm, seconds))
    report(run, seconds, args.window_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
