"""`synctalk serve [SERVICE]`: run one service, or (no SERVICE) the whole stack on 127.0.0.1.

The whole stack runs tts, audio_features and renderer as local subprocesses (each on its
configured port, so the three get their own cores and GIL), waits until each reports
SERVING on gRPC health, then runs the edge in this process and prints the page's URL.
Ctrl-C (or SIGTERM) drains the edge and stops the subprocesses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time

from synctalk.config import Settings, load_settings
from synctalk.log import configure_logging, get_logger

# service name -> (module with `async def serve(settings, host, port)`, settings port field)
SERVICES: dict[str, tuple[str, str]] = {
    "tts": ("services.tts.server", "tts_port"),
    "audio_features": ("services.audio_features.server", "audio_features_port"),
    "renderer": ("services.renderer.server", "renderer_port"),
    "edge": ("services.edge.server", "edge_http_port"),
}
BACKENDS = ("tts", "audio_features", "renderer")
LOCALHOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run a service (tts, audio_features, renderer, edge); without one, the whole "
             "stack on 127.0.0.1 with the web page",
    )
    p.add_argument("service", nargs="?", choices=sorted(SERVICES), help="service to run")
    p.add_argument("--host", default=None, help="listen address (default from config)")
    p.add_argument("--port", type=int, default=None,
                   help="listen port (default from config; the edge's HTTP port for the stack)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.service is None:
        configure_logging("stack", settings.log_format, settings.log_level)
        return asyncio.run(run_stack(settings, args.port))
    module_name, port_field = SERVICES[args.service]
    configure_logging(args.service, settings.log_format, settings.log_level)
    host = args.host or settings.services.host
    port = args.port if args.port is not None else getattr(settings.services, port_field)
    module = importlib.import_module(module_name)
    asyncio.run(module.serve(settings, host, port))
    return 0


def stack_settings(settings: Settings) -> Settings:
    """The settings of the edge in a local stack: every target is the local backend's port."""
    svc = settings.services
    services = svc.model_copy(update={
        "host": LOCALHOST,
        "tts_target": f"{LOCALHOST}:{svc.tts_port}",
        "audio_features_target": f"{LOCALHOST}:{svc.audio_features_port}",
        "renderer_target": f"{LOCALHOST}:{svc.renderer_port}",
    })
    return settings.model_copy(update={"services": services})


async def run_stack(settings: Settings, http_port: int | None = None) -> int:
    """Start the backends as subprocesses, then the edge here; stop all on a signal."""
    from services.edge.server import EdgeServer

    log = get_logger("synctalk.stack")
    settings = stack_settings(settings)
    svc = settings.services
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in BACKENDS:
            port = getattr(svc, SERVICES[name][1])
            children[name] = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
                [sys.executable, "-m", "synctalk", "serve", name, "--host", LOCALHOST,
                 "--port", str(port)],
                env={**os.environ, "SYNCTALK_SERVICE_NAME": name},
            )
        await _wait_serving(settings, children)
        edge = EdgeServer(settings, LOCALHOST,
                          http_port if http_port is not None else svc.edge_http_port)
        await edge.start()
        avatars = await _avatar_names(edge)
        print(f"\nSyncTalk 2D is up: {edge.url}\n"
              f"  gRPC Avatar.Animate on {edge.grpc.address}; press Ctrl-C to stop.", flush=True)
        if not avatars:
            print(f"  No avatar found under {settings.models.avatars_dir}: prepare one (see the "
                  "README) or set SYNCTALK_MODELS__AVATARS_DIR.", flush=True)
        await _until_signal_or_exit(edge, children)
        await edge.drain()
        return 0
    except _ChildFailed as err:
        log.error("stack.child_failed", service=err.name, returncode=err.returncode)
        print(f"synctalk serve: the {err.name} service exited with code {err.returncode}",
              file=sys.stderr)
        return 1
    finally:
        _stop_children(children, settings.server.drain_grace_s)


class _ChildFailed(Exception):
    def __init__(self, name: str, returncode: int | None) -> None:
        super().__init__(name)
        self.name = name
        self.returncode = returncode


async def _wait_serving(settings: Settings, children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Wait until every backend answers SERVING on gRPC health (or one of them exits)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from synctalk.rpc.channel import dial

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for name, child in children.items():
        target = getattr(settings.services, f"{name}_target")
        async with dial(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if child.poll() is not None:
                    raise _ChildFailed(name, child.returncode)
                if time.monotonic() > deadline:
                    raise _ChildFailed(name, None)
                with contextlib.suppress(Exception):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                await asyncio.sleep(0.25)


async def _avatar_names(edge: object) -> list[str]:
    try:
        listed = await edge.runtime.downstream.avatar_list()  # type: ignore[attr-defined]
    except Exception:
        return []
    return [a.name for a in listed]


async def _until_signal_or_exit(edge: object, children: dict[str, subprocess.Popen[bytes]]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        for name, child in children.items():
            if child.poll() is not None:
                raise _ChildFailed(name, child.returncode)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


def _stop_children(children: dict[str, subprocess.Popen[bytes]], grace_s: float) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 5
    for child in children.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        if child.poll() is None:
            child.kill()
            child.wait()
