"""Client channels to the services: size caps, round_robin over every address a name resolves to,
and quick reconnection to a service that comes back after a crash or restart."""

from __future__ import annotations

import json

import grpc

from synctalk.config import TransportConfig, get_settings
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

# gRPC's reconnect backoff grows from 1 s to 120 s, so a service that was down for a minute
# would stay unused for up to two more after it is back (every call failing UNAVAILABLE).
# Here a broken connection is retried within 0.1 s, then at most every second; a DNS name
# is re-resolved at most every 2 s (default 30 s), so a replica restarted at a new address
# is found as quickly.
RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.dns_min_time_between_resolutions_ms", 2000),
]


def dial(target: str, max_message_bytes: int | None = None,
         transport: TransportConfig | None = None) -> grpc.aio.Channel:
    """An insecure aio channel; a bare `host:port` is resolved through DNS so replicas are balanced.

    The size cap and `transport` default to the process settings' `server` section, the same
    policy the servers are built with, so the client's keepalive pings stay within what
    servers permit."""
    if "://" not in target and not target.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        target = f"dns:///{target}"
    server = get_settings().server
    options = channel_options(max_message_bytes or server.max_message_bytes,
                              transport or server.transport) + [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        *RECONNECT_OPTIONS,
    ]
    return grpc.aio.insecure_channel(target, options=options)
