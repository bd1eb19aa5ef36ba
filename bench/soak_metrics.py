"""The live soak's figures and verdict: resource samples of each process and their growth per
10 minutes, each call's audio check, the limits, and the report table (bench_live_soak runs
the calls; this module judges them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import psutil

DRIFT_LIMIT_S = 0.040
GROWTH_LIMIT = 0.10  # per 10 minutes, relative
COUNT_SLACK = 2.0  # open files and threads: this many more per 10 minutes is no leak
CROSSTALK_LIMIT = 0.01  # energy near another call's tone, relative to the call's own


@dataclass
class Samples:
    t: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    fds: list[float] = field(default_factory=list)
    threads: list[float] = field(default_factory=list)


def sample(pid: int, into: Samples, now: float) -> None:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in procs)
        fds = sum(p.num_fds() for p in procs)
        threads = sum(p.num_threads() for p in procs)
    except psutil.Error:
        return
    into.t.append(now)
    into.rss.append(rss)
    into.fds.append(fds)
    into.threads.append(threads)


def growth_per_10_min(t: list[float], values: list[float], skip: float = 0.2) -> float:
    """Relative growth per 10 minutes: slope of a straight-line fit over the samples after
    the first `skip` of the run, times 600 s, over the fitted value at the fit's start."""
    n = len(t)
    first = min(int(n * skip), max(0, n - 3))
    ts, vs = np.asarray(t[first:]), np.asarray(values[first:], dtype=np.float64)
    if ts.size < 3 or ts[-1] - ts[0] <= 0:
        return 0.0
    slope, intercept = np.polyfit(ts - ts[0], vs, 1)
    base = max(intercept, 1e-9)
    return float(slope * 600.0 / base)


@dataclass
class CallReport:
    name: str
    frames: int
    audio_exact: bool
    own_tone: bool
    crosstalk: float  # worst energy share at another call's tone
    error: str | None


@dataclass
class SoakReport:
    minutes: float
    calls: list[CallReport]
    latency_first_s: float
    latency_last_s: float
    latency_max_s: float
    growth: dict[str, dict[str, float]]  # process -> kind -> relative growth per 10 min
    start: dict[str, dict[str, float]]
    counts_growth: dict[str, dict[str, float]]  # process -> fds/threads -> absolute per 10 min

    @property
    def drift_s(self) -> float:
        return self.latency_last_s - self.latency_first_s

    @property
    def audio_ok(self) -> bool:
        return all(c.audio_exact and c.own_tone and c.crosstalk <= CROSSTALK_LIMIT
                   and c.error is None and c.frames > 0 for c in self.calls)

    @property
    def drift_ok(self) -> bool:
        return abs(self.drift_s) <= DRIFT_LIMIT_S

    def grows(self, process: str, kind: str) -> bool:
        """Relative growth past the limit (for counts, also more than COUNT_SLACK a 10 min:
        one more connection or worker thread on a base of 15 is not a leak)."""
        if self.growth[process][kind] <= GROWTH_LIMIT:
            return False
        return kind == "rss" or self.counts_growth[process][kind] > COUNT_SLACK

    @property
    def growth_ok(self) -> bool:
        return not any(self.grows(p, k) for p, kinds in self.growth.items() for k in kinds)

    @property
    def ok(self) -> bool:
        return self.audio_ok and self.drift_ok and self.growth_ok


def print_report(report: SoakReport, planted: bool) -> None:
    print(f"\n## Live soak: {report.minutes:g} min, 1 long Animate call + "
          f"{len(report.calls) - 1} tone calls{' (planted leak)' if planted else ''}\n")
    print("| call | frames | audio back == audio sent | own tone | worst cross-talk | error |")
    print("|---|---:|---|---|---:|---|")
    for c in report.calls:
        print(f"| {c.name} | {c.frames} | {c.audio_exact} | {c.own_tone} | "
              f"{c.crosstalk:.2e} | {c.error or '-'} |")
    print(f"\nlong call latency (arrival - audio sent): first tenth {report.latency_first_s * 1000:.0f}"
          f" ms, last tenth {report.latency_last_s * 1000:.0f} ms, drift "
          f"{report.drift_s * 1000:+.0f} ms (limit {DRIFT_LIMIT_S * 1000:.0f}), worst "
          f"{report.latency_max_s * 1000:.0f} ms")
    print("\n| process | RSS MiB at start | RSS /10 min | fds at start | fds /10 min "
          "| threads at start | threads /10 min |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, kinds in report.growth.items():
        s = report.start[name]
        print(f"| {name} | {s['rss_mib']:.0f} | {kinds['rss'] * 100:+.1f}% | {s['fds']:.0f} | "
              f"{kinds['fds'] * 100:+.1f}% | {s['threads']:.0f} | {kinds['threads'] * 100:+.1f}% |")
    print(f"\nverdict: audio {'ok' if report.audio_ok else 'WRONG'}; drift "
          f"{'ok' if report.drift_ok else 'TOO LARGE'}; growth "
          f"{'flat' if report.growth_ok else 'NOT flat'} (limit {GROWTH_LIMIT * 100:.0f}% per "
          f"10 min) -> {'PASS' if report.ok else 'FAIL'}")
