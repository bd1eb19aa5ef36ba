"""Time to first frame and sustained real-time sessions of the whole stack over HTTP (issue 7).

    .venv/bin/python -m bench.bench_edge [--repeats 5] [--sessions 1,2,3] [--audio-seconds 5]

Why: the per-service benchmarks (tts, features, renderer) each time one stage; what a user
sees is the edge's MJPEG stream, whose first frame waits for the TTS first sentence, the
feature look-ahead (8 frames = 320 ms of audio) and the first render, and whose real-time
pacing only holds if every stage keeps 25 frames/s for every session at once. This measures
that end to end, against the real stack on 127.0.0.1 (tts, audio_features, renderer and edge
as `synctalk serve SERVICE` subprocesses on free ports, the bundled `demo` avatar, the piper
joe voice), with an httpx client in this process:

1. text: `GET /generate?text=...&realtime=false` (MJPEG), request sent -> first JPEG part
   after the still frame (part 0 is the avatar's still); median of N after one warm-up;
2. audio: `POST /generate-from-audio?realtime=false` (multipart `audio_file`, a 16 kHz WAV of
   piper speech), same measure;
3. K concurrent `POST /generate-from-audio` streams paced in real time (the default): per
   session the delivered frames/s, the frames later than their pts + 200 ms after the
   session's first frame, and whether every session kept 25 frames/s.

The machine is shared: the load average is printed; absolute figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
AVATAR = "demo"
BOUNDARY = b"--frame\r\n"
FPS = 25
LATE_ALLOWANCE_S = 0.2
TEXT = "Hello there, and welcome to the demo. I can speak any text you send me."
SPEECH = ("Good morning, and welcome to the demo. I can speak any text you send me, one "
          "sentence at a time, and my mouth moves with the words.")
STARTUP_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def print_machine() -> None:
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average at start {loadavg()}", flush=True)


@contextlib.contextmanager
def running_stack(prefix: str, keep_logs: bool) -> Iterator[StackProcs]:
    """The four services started and healthy; stopped (and their log tails printed when
    `keep_logs`) on the way out, whatever happened."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        stack = StackProcs(Path(tmp))
        try:
            t = time.monotonic()
            stack.start()
            stack.wait_healthy()
            print(f"stack healthy after {time.monotonic() - t:.1f} s at {stack.url}", flush=True)
            yield stack
        finally:
            stack.stop()
            if keep_logs:
                for log in Path(tmp).glob("*.log"):
                    print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")


class StackProcs:
    """tts, audio_features, renderer and edge as subprocesses on free 127.0.0.1 ports."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[io.BufferedWriter] = []
        ports = {name: free_port() for name in ("tts", "audio_features", "renderer", "edge",
                                                 "edge_grpc")}
        self.url = f"http://{HOST}:{ports['edge']}"
        self.env = {
            **os.environ,
            "SYNCTALK_MODELS__DEVICE": "cpu",
            "SYNCTALK_MODELS__AVATARS_DIR": str(REPO / "assets" / "avatars"),
            "SYNCTALK_SERVICES__DEFAULT_AVATAR": AVATAR,
            "SYNCTALK_SERVICES__HOST": HOST,
            "SYNCTALK_SERVICES__TTS_TARGET": f"{HOST}:{ports['tts']}",
            "SYNCTALK_SERVICES__AUDIO_FEATURES_TARGET": f"{HOST}:{ports['audio_features']}",
            "SYNCTALK_SERVICES__RENDERER_TARGET": f"{HOST}:{ports['renderer']}",
            "SYNCTALK_SERVICES__EDGE_GRPC_PORT": str(ports["edge_grpc"]),
            "SYNCTALK_SERVICES__METRICS_PORT": "0",
            "SYNCTALK_LOG_LEVEL": "WARNING",
            "SYNCTALK_LOG_FORMAT": "json",
        }
        self.ports = ports

    def start(self) -> None:
        for name in ("tts", "audio_features", "renderer", "edge"):
            log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "synctalk", "serve", name, "--host", HOST,
                 "--port", str(self.ports[name])],
                cwd=REPO, env={**self.env, "SYNCTALK_SERVICE_NAME": name},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = ""
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                for proc in self.procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{proc.args[4]} exited with {proc.returncode}; "
                                           f"see {self.log_dir}")
                with contextlib.suppress(httpx.HTTPError):
                    reply = client.get("/health")
                    last = reply.text
                    if reply.status_code == 200 and reply.json().get("status") == "ok":
                        return
                time.sleep(0.5)
        raise RuntimeError(f"stack not healthy after {STARTUP_TIMEOUT_S:.0f} s: {last}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


@dataclass
class StreamResult:
    first_frame_s: float | None = None  # request sent -> first part after the still
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each lip-synced part
    status: int = 0
    error: str = ""


class MjpegParts:
    """Incremental parser of `--frame\\r\\n<headers>\\r\\n\\r\\n<JPEG>\\r\\n` parts."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> int:
        """Add bytes; return how many complete parts they finished."""
        self.buf += data
        done = 0
        while True:
            start = self.buf.find(BOUNDARY)
            if start < 0:
                return done
            head_end = self.buf.find(b"\r\n\r\n", start)
            if head_end < 0:
                return done
            length = None
            for line in bytes(self.buf[start + len(BOUNDARY):head_end]).split(b"\r\n"):
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:
                raise ValueError("MJPEG part without Content-Length")
            end = head_end + 4 + length + 2
            if len(self.buf) < end:
                return done
            del self.buf[:end]
            done += 1


async def stream(client: httpx.AsyncClient, method: str, path: str, *, params: dict[str, str],
                 files: dict[str, tuple[str, bytes, str]] | None = None,
                 first_only: bool, timeout_s: float) -> StreamResult:
    """One MJPEG request; arrival times of the parts after the still frame."""
    result = StreamResult()
    parser = MjpegParts()
    parts = 0
    sent = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(method, path, params=params, files=files) as reply:
                result.status = reply.status_code
                if reply.status_code != 200:
                    result.error = (await reply.aread()).decode("utf-8", "replace")[:200]
                    return result
                async for chunk in reply.aiter_raw():
                    now = time.monotonic()
                    for _ in range(parser.feed(chunk)):
                        parts += 1
                        if parts == 1:
                            continue  # the still frame
                        if result.first_frame_s is None:
                            result.first_frame_s = now - sent
                        result.arrivals.append(now)
                    if first_only and result.first_frame_s is not None:
                        return result
    except TimeoutError:
        result.error = f"timed out after {timeout_s:.0f} s"
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def make_wav(seconds: float) -> tuple[bytes, float]:
    """About `seconds` of piper speech as a 16 kHz mono 16-bit WAV (bytes, duration)."""
    import soxr

    from training.synthetic.speech import speak

    speech = speak(SPEECH, seconds=seconds)
    audio = np.asarray(speech.audio, np.float32)
    if speech.sample_rate != 16000:
        audio = soxr.resample(audio, speech.sample_rate, 16000, quality="HQ")
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return out.getvalue(), len(pcm) / 16000


def fmt_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}" if values else "-"


async def first_frames(url: str, label: str, repeats: int, request: dict) -> list[float]:
    times: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for k in range(repeats + 1):
            r = await stream(client, first_only=True, timeout_s=120, **request)
            tag = "warm-up" if k == 0 else f"run {k}"
            if r.first_frame_s is None:
                print(f"  {label} {tag}: no frame (status {r.status}) {r.error}", flush=True)
                continue
            print(f"  {label} {tag}: first frame {r.first_frame_s * 1000:.0f} ms", flush=True)
            if k:
                times.append(r.first_frame_s)
            await asyncio.sleep(0.5)  # let the cancelled session's streams wind down
    return times


@dataclass
class SessionStats:
    frames: int
    fps: float
    late: int
    max_late_ms: float
    median_late_ms: float
    end_late_ms: float  # last frame's arrival minus its pts (after the first frame)
    kept: bool
    error: str


def session_stats(r: StreamResult, expected_frames: int) -> SessionStats:
    if not r.arrivals:
        return SessionStats(0, 0.0, 0, 0.0, 0.0, 0.0, False, r.error or f"status {r.status}")
    t0 = r.arrivals[0]
    lateness = [(t - t0) - (i / FPS) for i, t in enumerate(r.arrivals)]
    late = sum(1 for x in lateness if x > LATE_ALLOWANCE_S)
    span = r.arrivals[-1] - t0
    fps = (len(r.arrivals) - 1) / span if span > 0 else 0.0
    complete = len(r.arrivals) >= expected_frames - 1 and not r.error
    return SessionStats(len(r.arrivals), fps, late, max(0.0, max(lateness)) * 1000,
                        statistics.median(lateness) * 1000, lateness[-1] * 1000,
                        complete and late == 0, r.error)


async def concurrent(url: str, k: int, wav: bytes, seconds: float) -> list[SessionStats]:
    limits = httpx.Limits(max_connections=k + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        results = await asyncio.gather(*[
            stream(client, "POST", "/generate-from-audio", params={"avatar": AVATAR},
                   files={"audio_file": ("speech.wav", wav, "audio/wav")},
                   first_only=False, timeout_s=seconds * 3 + 60)
            for _ in range(k)])
    return [session_stats(r, round(seconds * FPS)) for r in results]


async def run(args: argparse.Namespace) -> int:
    print_machine()
    wav, audio_s = make_wav(args.audio_seconds)
    conc_wav, conc_s = make_wav(args.session_seconds)
    print(f"upload WAV {audio_s:.2f} s, concurrent WAV {conc_s:.2f} s (16 kHz piper joe)",
          flush=True)
    with running_stack("bench_edge_", args.keep_logs) as stack:
        text_ff = await first_frames(stack.url, "text", args.repeats, {
            "method": "GET", "path": "/generate",
            "params": {"text": args.text, "avatar": AVATAR, "realtime": "false"}})
        audio_ff = await first_frames(stack.url, "audio", args.repeats, {
            "method": "POST", "path": "/generate-from-audio",
            "params": {"avatar": AVATAR, "realtime": "false"},
            "files": {"audio_file": ("speech.wav", wav, "audio/wav")}})
        load_ff = loadavg()
        async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
            full = await stream(client, "POST", "/generate-from-audio",
                                params={"avatar": AVATAR, "realtime": "false"},
                                files={"audio_file": ("speech.wav", wav, "audio/wav")},
                                first_only=False, timeout_s=audio_s * 10 + 60)
        unpaced = session_stats(full, round(audio_s * FPS))
        print(f"  unpaced: {unpaced.frames} frames at {unpaced.fps:.1f} frames/s "
              f"{unpaced.error}", flush=True)
        conc: dict[int, list[SessionStats]] = {}
        conc_load: dict[int, str] = {}
        for k in args.sessions:
            await asyncio.sleep(1.0)
            conc[k] = await concurrent(stack.url, k, conc_wav, conc_s)
            conc_load[k] = loadavg()
            for i, s in enumerate(conc[k]):
                print(f"  K={k} session {i}: {s.frames} frames, {s.fps:.2f} frames/s, "
                      f"{s.late} late (max {s.max_late_ms:.0f} ms, median "
                      f"{s.median_late_ms:.0f} ms, last {s.end_late_ms:.0f} ms over pts), "
                      f"kept 25/s: {s.kept} {s.error}", flush=True)

    print(f"\n## Time to first frame (realtime=false, median of {args.repeats} after a "
          f"warm-up; load average after {load_ff})\n")
    print("| request | runs | median ms | min ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for label, times in ((f"GET /generate, text ({len(args.text)} chars)", text_ff),
                         (f"POST /generate-from-audio, {audio_s:.1f} s WAV", audio_ff)):
        lo = f"{min(times) * 1000:.0f}" if times else "-"
        hi = f"{max(times) * 1000:.0f}" if times else "-"
        print(f"| {label} | {len(times)} | {fmt_ms(times)} | {lo} | {hi} |")
    print(f"\nOne unpaced stream (realtime=false, {audio_s:.1f} s WAV): {unpaced.frames} frames "
          f"at {unpaced.fps:.1f} frames/s (first to last frame): the stack's capacity for one "
          "session.")
    print(f"\n## Concurrent real-time sessions ({conc_s:.1f} s of audio each, "
          f"{round(conc_s * FPS)} frames; late = after pts + {LATE_ALLOWANCE_S * 1000:.0f} ms "
          "from the session's first frame)\n")
    print("| K | frames/s per session (median, min) | frames per session (min) | late frames "
          "(total) | lateness ms: median frame, worst | every session kept 25/s | load after |")
    print("|---:|---|---:|---:|---|---|---|")
    for k, stats in conc.items():
        fps = [s.fps for s in stats]
        print(f"| {k} | {statistics.median(fps):.2f}, {min(fps):.2f} | "
              f"{min(s.frames for s in stats)} | {sum(s.late for s in stats)} | "
              f"{statistics.median(s.median_late_ms for s in stats):.0f}, "
              f"{max(s.max_late_ms for s in stats):.0f} | "
              f"{'yes' if all(s.kept for s in stats) else 'no'} | {conc_load[k]} |")
    print(f"\nload average at end {loadavg()}; {datetime.datetime.now():%Y-%m-%d %H:%M}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bench_edge", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="first-frame runs after one warm-up")
    p.add_argument("--sessions", default="1,2,3",
                   help="comma-separated K values of concurrent real-time sessions")
    p.add_argument("--audio-seconds", type=float, default=5.0,
                   help="length of the uploaded WAV for the first-frame measure")
    p.add_argument("--session-seconds", type=float, default=6.0,
                   help="length of each concurrent session's WAV")
    p.add_argument("--text", default=TEXT, help="text for GET /generate")
    p.add_argument("--keep-logs", action="store_true",
                   help="print the tail of each service's log at the end")
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.sessions = [int(k) for k in args.sessions.split(",") if k.strip()]
    if args.repeats < 1 or not args.sessions or min(args.sessions) < 1 or max(args.sessions) > 8:
        p.error("--repeats >= 1 and 1 <= K <= 8")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
