"""Container health probe: `python -m synctalk.rpc.healthcheck HOST:PORT [SERVICE]`.

Exits 0 when `grpc.health.v1` reports SERVING, 1 otherwise (NOT_SERVING while draining,
unreachable, timed out), so compose and Kubernetes can use it as the check command without a
separate grpc_health_probe binary.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout_s: float = 3.0) -> bool:
    """True when the server at `target` reports `service` ("" = the whole server) SERVING."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="HOST:PORT of a gRPC server")
    parser.add_argument("service", nargs="?", default="", help="service name (default: server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    args = parser.parse_args(argv)
    healthy = check(args.target, args.service, args.timeout)
    print("SERVING" if healthy else "NOT SERVING")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
