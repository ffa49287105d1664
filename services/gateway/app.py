"""The gateway's HTTP surface: `/v1/realtime` WebSocket, the web page, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.session import GatewaySession
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.metrics import GATEWAY_CLIENT_ERRORS, GATEWAY_SESSIONS
from shared.runner import Readiness, health_router

log = logging.getLogger(__name__)

# The web page a person talks to (plain ES modules, no build step); package data, so wheels carry it.
STATIC_DIR = Path(__file__).parent / "static"


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """No Origin (not a browser), the gateway's own origin, or one on the allow-list."""
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc == host


class Gateway:
    """Accepts client sessions until draining, and closes them when shutting down."""

    def __init__(self, settings: GatewaySettings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.readiness = Readiness(bus)
        self.readiness.loaded = True  # nothing to load: ready as soon as Redis answers
        self.sessions: set[GatewaySession] = set()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()

    def app(self) -> FastAPI:
        """The ASGI app."""
        app = FastAPI(title="voxmesh gateway", docs_url=None, redoc_url=None)
        app.include_router(health_router(self.readiness))
        app.add_api_websocket_route("/v1/realtime", self.realtime)
        app.add_api_route("/", _index_page, methods=["GET"], include_in_schema=False)
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
        return app

    async def realtime(
        self, websocket: WebSocket, output_sample_rate: int = Query(16_000, ge=8_000, le=48_000)
    ) -> None:
        """One realtime voice session (protocol: docs/protocol.md)."""
        await websocket.accept()
        if not origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host"),
                              self.settings.allowed_origins):  # fmt: skip
            GATEWAY_CLIENT_ERRORS.labels(reason="origin").inc()
            await websocket.close(code=1008, reason="origin not allowed")
            return
        if self.readiness.draining or len(self.sessions) >= self.settings.max_sessions:
            await websocket.close(code=1013, reason="try again later")
            return
        session = GatewaySession(websocket, self.bus, self.settings, output_sample_rate)
        self.sessions.add(session)
        self._no_sessions.clear()
        GATEWAY_SESSIONS.inc()
        try:
            await session.run()
        except Exception:
            log.exception("session failed", extra={"session_id": session.session_id})
            await _close_quietly(websocket, 1011, "internal error")
        finally:
            self.sessions.discard(session)
            if not self.sessions:
                self._no_sessions.set()
            GATEWAY_SESSIONS.dec()

    async def drain(self, grace_s: float) -> None:
        """Refuse new sessions, give open ones `grace_s` to end, then close them (1001 going away)."""
        self.readiness.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_sessions.wait(), timeout=grace_s)
        for session in list(self.sessions):
            await _close_quietly(session.ws, 1001, "server shutting down")


async def _index_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason)
    except RuntimeError:
        pass  # already closed by the client
