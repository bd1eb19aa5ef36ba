"""Health and metrics: what a load balancer and Prometheus poll."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from services.edge.routes.deps import Runtime, new_router

router = new_router()


@router.get("/health", summary="This edge and each downstream service's gRPC health")
async def health(rt: Runtime) -> dict[str, Any]:
    services = {"edge": "ok", **await rt.downstream.health()}
    status = "ok" if all(v == "ok" for v in services.values()) else "degraded"
    return {"status": status, "services": services, "active_sessions": rt.sessions.active,
            "max_sessions": rt.sessions.max_active}


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=True,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(rt: Runtime) -> Response:
    rt.metrics.active_sessions.set(rt.sessions.active)
    return Response(rt.metrics.render(), media_type=rt.metrics.content_type)
