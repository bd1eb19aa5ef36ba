"""`synctalk config`: print the effective configuration (defaults < TOML file < environment)."""

from __future__ import annotations

import argparse
import json

from synctalk.config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective configuration as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(load_settings().model_dump(mode="json"), indent=2))
    return 0
