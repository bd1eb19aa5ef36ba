"""The Prometheus listener of a backend service process (tts, audio_features, renderer).

Each of those processes runs one service, so its metrics live on prometheus_client's
default registry (with the process_* collectors) and one small HTTP thread serves them at
`/metrics` on the service's configured port. The edge serves its own registry on its HTTP
port instead and needs no listener.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, start_http_server

from synctalk.config import ServicesConfig
from synctalk.log import get_logger

log = get_logger("synctalk.metrics")


def metrics_port(services: ServicesConfig, service: str) -> int:
    """The service's own `<service>_metrics_port` if set, else the shared `metrics_port`."""
    own = getattr(services, f"{service}_metrics_port")
    return own or services.metrics_port


@dataclass
class MetricsListener:
    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_http(services: ServicesConfig, service: str, host: str) -> MetricsListener | None:
    """Serve the default registry at http://host:port/metrics; None when the port is 0."""
    port = metrics_port(services, service)
    if port == 0:
        return None
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    listener = MetricsListener(server, thread)
    log.info("metrics.start", service=service, address=f"{host}:{listener.port}")
    return listener


@contextmanager
def serving_metrics(services: ServicesConfig, service: str, host: str) -> Iterator[None]:
    """The metrics listener for as long as the service runs (nothing when its port is 0)."""
    listener = start_metrics_http(services, service, host)
    try:
        yield
    finally:
        if listener is not None:
            listener.close()
