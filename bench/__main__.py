"""`python -m bench [NAME ...]` (`make bench`): run the benchmarks, each printing its table.

`soak` runs for 30 minutes, so it only runs when named (`python -m bench soak`).

Figures go into bench/RESULTS.md by hand with the command and the machine: a benchmark's
numbers are only meaningful beside the load and hardware they were taken on.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["tts", "features", "unet", "kernels", "renderer", "idle", "training", "edge", "soak"]
OPT_IN = {"soak"}  # too long for the default run


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or [
        n for n in BENCHMARKS if n not in OPT_IN]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        try:
            module = importlib.import_module(f"bench.bench_{name}")
        except ModuleNotFoundError as exc:
            print(f"== {name}: not available ({exc})")
            continue
        print(f"== {name}", flush=True)
        status = module.main([])
        if status:
            return int(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
