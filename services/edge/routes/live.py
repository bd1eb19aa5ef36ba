"""WebSocket `/live`: one live session per connection (services/edge/live.py; the protocol
and its close codes in services/edge/live_protocol.py, docs/live-microphone.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from services.edge.errors import EdgeError
from services.edge.live import LiveSession
from services.edge.live_protocol import (
    INTERNAL,
    NORMAL,
    PATH,
    POLICY,
    TRY_LATER,
    LiveClose,
    LiveConfig,
    close_for,
    close_socket,
    first_config,
    origin_allowed,
)
from services.edge.runtime import EdgeRuntime
from services.edge.sessions import Session
from synctalk.log import get_logger

log = get_logger("services.edge.live")
router = APIRouter()


def _admit(ws: WebSocket, rt: EdgeRuntime, headers: dict[str, str], client: str,
           config: LiveConfig) -> None:
    """The access policy (token, rate, kind `live`); a browser may send its token in the
    config, since it cannot set headers on a WebSocket."""
    policy = getattr(ws.app.state, "access", None)
    if policy is None:
        return
    if config.token and "authorization" not in headers and "x-api-token" not in headers:
        headers["x-api-token"] = config.token
    denied = policy.check(headers, client, kind="live")
    if denied is not None:
        raise LiveClose(TRY_LATER if denied.http_status == 429 else POLICY, denied.reason)


@router.websocket(PATH)
async def live(ws: WebSocket) -> None:
    """One live session per connection (see services/edge/live.py)."""
    rt: EdgeRuntime = ws.app.state.runtime
    svc = rt.settings.services
    headers = {k.lower(): v for k, v in ws.headers.items()}
    client = ws.client.host if ws.client else ""
    await ws.accept()
    session: Session | None = None
    live_session: LiveSession | None = None
    code, reason = NORMAL, "done"
    try:
        if not origin_allowed(headers, svc.cors_origins):
            raise LiveClose(POLICY, f"origin {headers.get('origin')!r} is not allowed "
                                    "(services.cors_origins)")
        config = await first_config(ws, min(svc.idle_timeout_s, 30.0))
        _admit(ws, rt, headers, client, config)
        avatar = await rt.avatar(config.avatar)
        session = rt.sessions.open_stream()
        rt.metrics.active_sessions.set(rt.sessions.active)
        log.info("live.start", session_id=session.id, avatar=avatar.name,
                 sample_rate=config.sample_rate, client=client)
        live_session = LiveSession(ws, rt, session, avatar, config)
        await live_session.run()
    except LiveClose as close:
        code, reason = close.code, close.reason
    except EdgeError as err:
        close = close_for(err)
        code, reason = close.code, close.reason
    except WebSocketDisconnect:
        code, reason = NORMAL, "the client went away"
    except Exception as err:  # a bug: logged with its traceback, the client gets 1011
        log.exception("live.error", error=repr(err))
        code, reason = INTERNAL, "internal error"
    finally:
        if session is not None:
            rt.sessions.close_stream(session)
            rt.metrics.active_sessions.set(rt.sessions.active)
            log.info("live.end", session_id=session.id, code=code, reason=reason,
                     sent=live_session.outbox.sent if live_session else 0,
                     dropped=live_session.dropped if live_session else 0)
    await close_socket(ws, code, reason)
