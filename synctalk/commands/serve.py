"""`synctalk serve [SERVICE]`: run one service, or (no SERVICE) the whole stack on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import importlib

from synctalk.config import load_settings
from synctalk.log import configure_logging

# service name -> (module with `async def serve(settings, host, port)`, settings port field)
SERVICES: dict[str, tuple[str, str]] = {
    "tts": ("services.tts.server", "tts_port"),
    "audio_features": ("services.audio_features.server", "audio_features_port"),
    "renderer": ("services.renderer.server", "renderer_port"),
    "edge": ("services.edge.server", "edge_http_port"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run a service (tts, audio_features, renderer, edge)")
    p.add_argument("service", nargs="?", choices=sorted(SERVICES), help="service to run")
    p.add_argument("--host", default=None, help="listen address (default from config)")
    p.add_argument("--port", type=int, default=None, help="listen port (default from config)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.service is None:
        args.service = "edge"
    module_name, port_field = SERVICES[args.service]
    configure_logging(args.service, settings.log_format, settings.log_level)
    host = args.host or settings.services.host
    port = args.port if args.port is not None else getattr(settings.services, port_field)
    module = importlib.import_module(module_name)
    asyncio.run(module.serve(settings, host, port))
    return 0
