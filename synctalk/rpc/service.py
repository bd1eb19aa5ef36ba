"""What a model-serving gRPC service (tts, audio_features) sets up around its servicer: a
worker pool for its blocking model calls, and serving until SIGTERM with its metrics up."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from synctalk.config import ModelsConfig, ServicesConfig
from synctalk.metrics_http import serving_metrics
from synctalk.rpc.server import GrpcServer


def worker_pool(models: ModelsConfig, prefix: str) -> ThreadPoolExecutor:
    """Threads for model calls, so streams never block the event loop: `models.threads`
    (0 = one per core)."""
    return ThreadPoolExecutor(max_workers=models.threads or os.cpu_count() or 2,
                              thread_name_prefix=prefix)


async def serve_with_metrics(server: GrpcServer, services: ServicesConfig, service: str,
                             host: str) -> None:
    """Run the server until SIGTERM or SIGINT, with the service's metrics listener as long."""
    with serving_metrics(services, service, host):
        await server.run_until_signal()
