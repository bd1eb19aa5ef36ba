"""The command line the two soak benchmarks (bench_soak, bench_live_soak) share: how long to
run, whether to print the services' logs, and the way from parsed options to the run."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any


def soak_parser(prog: str, doc: str | None, minutes: float,
                minutes_help: str) -> argparse.ArgumentParser:
    """A parser with `--minutes` and `--keep-logs`; the soak adds its own options."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])
    p.add_argument("--minutes", type=float, default=minutes, help=minutes_help)
    p.add_argument("--keep-logs", action="store_true",
                   help="print the tail of each service's log at the end")
    return p


def run_soak(p: argparse.ArgumentParser, argv: list[str] | None,
             valid: Callable[[argparse.Namespace], bool], requirement: str,
             run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> int:
    """Parse, refuse values outside `requirement`, and run the soak (httpx's per-request
    log lines would drown its report)."""
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not valid(args):
        p.error(requirement)
    return asyncio.run(run(args))
