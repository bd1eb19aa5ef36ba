"""The `synctalk` command: one subcommand per module in `synctalk.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`; its parser sets `func(args) -> int`.
COMMANDS = [
    "synctalk.commands.serve",
    "synctalk.commands.config",
    "synctalk.commands.synth",
    "synctalk.commands.prepare",
    "synctalk.commands.train",
    "synctalk.commands.infer",
    "synctalk.commands.evaluate",
    "synctalk.commands.export",
    "synctalk.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synctalk", description="SyncTalk 2D: real-time audio-driven 2D lip-sync talking heads"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
