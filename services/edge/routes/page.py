"""The web page and its static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from services.edge.routes.deps import new_router

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = new_router()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def mount_static(app: FastAPI) -> None:
    """/static (a mount is not carried by include_router, so the app gets it directly)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
