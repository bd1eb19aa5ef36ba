"""A planted leak for bench.bench_live_soak --plant-leak: imported by every Python process
started with this folder on PYTHONPATH, it leaks only when SYNCTALK_BENCH_LEAK is set.

Each second it keeps 2 MiB more memory and one more open file, and every 5 s one more
thread, the three kinds of growth the soak's verdict watches; the verdict must flip."""

from __future__ import annotations

import os
import threading
import time


def _leak() -> None:
    kept: list[object] = []
    started = time.monotonic()
    while True:
        time.sleep(1.0)
        kept.append(bytearray(os.urandom(1024)) * 2048)
        kept.append(open(os.devnull, "rb"))  # noqa: SIM115 (kept open on purpose)
        if int(time.monotonic() - started) % 5 == 0:
            stop = threading.Event()
            threading.Thread(target=stop.wait, daemon=True).start()
            kept.append(stop)


if os.environ.get("SYNCTALK_BENCH_LEAK"):
    threading.Thread(target=_leak, name="planted-leak", daemon=True).start()
