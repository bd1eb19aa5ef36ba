"""The benchmarks' timer: one warm-up call, then the median of timed calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int,
                   sync: Callable[[], None] | None = None) -> float:
    """Median wall time of `fn` over `repeats` calls after one untimed warm-up call.

    `sync` (e.g. `torch.cuda.synchronize`) runs after every call, so work a call queues on a
    device is counted in its own time and not in the next call's."""
    fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
