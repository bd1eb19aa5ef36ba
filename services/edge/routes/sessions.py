"""A session's controls and results: cancel (barge-in), player figures, the mp4."""

from __future__ import annotations

from typing import Any

import grpc
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from services.edge.errors import EdgeError
from services.edge.routes.deps import Runtime, new_router

router = new_router()


class PlayerStats(BaseModel):
    """Figures the page measured while playing a stream."""

    model_config = ConfigDict(extra="ignore")

    av_offset_ms: float | None = Field(None, ge=-10_000, le=10_000)
    fps: float | None = Field(None, ge=0, le=1000)
    dropped_frames: int | None = Field(None, ge=0, le=1_000_000)
    time_to_first_frame_ms: float | None = Field(None, ge=0, le=600_000)


@router.post("/sessions/{session_id}/cancel",
             summary="Stop the session's utterance in progress (barge-in)")
async def cancel(rt: Runtime, session_id: str) -> dict[str, Any]:
    session = rt.sessions.get(session_id)
    return {"session_id": session.id, "cancelled": rt.sessions.cancel(session)}


@router.post("/sessions/{session_id}/stats", status_code=204,
             summary="Figures measured by a player (feeds the player_* metrics)")
async def player_stats(rt: Runtime, session_id: str, stats: PlayerStats) -> Response:
    rt.sessions.get(session_id)
    m = rt.metrics
    if stats.av_offset_ms is not None:
        m.player_av_offset.observe(stats.av_offset_ms / 1000)
    if stats.fps is not None:
        m.player_fps.observe(stats.fps)
    if stats.dropped_frames:
        m.player_dropped.inc(stats.dropped_frames)
    return Response(status_code=204)


@router.get("/result/{session_id}.mp4", summary="The session's last completed utterance as mp4",
            responses={200: {"content": {"video/mp4": {}}}, 404: {"description": "none"}})
async def result(rt: Runtime, session_id: str) -> Response:
    data = await rt.results.mp4(session_id)
    if data is None:
        raise EdgeError(404, grpc.StatusCode.NOT_FOUND,
                        f"no result for session {session_id!r} (not finished, or expired)")
    return Response(data, media_type="video/mp4", headers={
        "Content-Disposition": f'attachment; filename="synctalk-{session_id[:8]}.mp4"'})
