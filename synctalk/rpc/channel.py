"""Client channels to the services: size caps, round_robin over every address a name resolves to."""

from __future__ import annotations

import json

import grpc

from synctalk.rpc.server import channel_options

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def dial(target: str, max_message_bytes: int = 8 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure aio channel; a bare `host:port` is resolved through DNS so replicas are balanced."""
    if "://" not in target and not target.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        target = f"dns:///{target}"
    options = channel_options(max_message_bytes) + [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
    ]
    return grpc.aio.insecure_channel(target, options=options)
