"""The gateway's HTTP surface: `/v1/realtime` WebSocket, `/v1/webrtc/offer`, the web page, `/v1/token`,
health and readiness; `/metrics` on a port of its own."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.access import Access, bearer_token, chosen_subprotocol
from services.gateway.inbound import InboundWriter
from services.gateway.openai_realtime.session import OpenAIRealtimeSession
from services.gateway.resume import Claimed, ResumeKey, Resumes, offered_resume, token_subject
from services.gateway.rtc_endpoint import WebRtcEndpoint
from services.gateway.session import GatewaySession
from services.gateway.settings import GatewaySettings
from services.gateway.transport import GatewayWebSocketProtocol
from shared.auth import redact_token_logs
from shared.bus import Bus
from shared.metrics import GATEWAY_CLIENT_ERRORS, GATEWAY_SESSIONS
from shared.runner import Readiness, health_router, http_server, metrics_router

log = logging.getLogger(__name__)

# The web page a person talks to (plain ES modules, no build step); package data, so wheels carry it.
STATIC_DIR = Path(__file__).parent / "static"
# Of the shutdown grace: the end of it, kept for the server to stop (uvicorn waits this long for its
# connections, then cancels), and before that, for closing sessions whose reply is still going out.
_SERVER_STOP_S = 1.0
_CLOSING_S = 2.0
_DRAIN_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Refusal:
    """A session refused for now: the HTTP status for a WebRTC offer, the reason for both transports
    (a WebSocket closes with 1013 and this reason)."""

    status: int
    reason: str


class Gateway:
    """Accepts client sessions until draining, and closes them when shutting down.

    Raises `MissingSecretError` when its settings need session tokens and no secret is configured.
    """

    def __init__(self, settings: GatewaySettings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.access = Access(settings)
        self.readiness = Readiness(bus)
        self.readiness.loaded = True  # nothing to load: ready as soon as Redis answers
        self.sessions: set[GatewaySession] = set()
        self.resumes = Resumes(bus, settings.resume_window_s)
        self.inbound_writer = InboundWriter(bus)
        """Every session's client audio to Redis, many sessions' frames a round trip."""
        self._per_ip: Counter[str] = Counter()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self.webrtc = WebRtcEndpoint(self)

    def server(self) -> uvicorn.Server:
        """The public app under uvicorn, as `voxmesh gateway` serves it (closes bounded: see transport)."""
        return http_server(
            self.app(), self.settings, ws_max_size=self.settings.ws_max_message_bytes,
            ws=GatewayWebSocketProtocol, timeout_graceful_shutdown=_SERVER_STOP_S * 0.8,
        )  # fmt: skip

    def app(self) -> FastAPI:
        """The public ASGI app (no `/metrics`: that is `metrics_app`, on its own port)."""
        redact_token_logs("uvicorn.error", "uvicorn.access", "websockets.server")
        app = FastAPI(title="voxmesh gateway", docs_url=None, redoc_url=None)
        app.include_router(health_router(self.readiness, metrics=False))
        app.add_api_websocket_route("/v1/realtime", self.realtime)
        if self.settings.token_endpoint:
            app.add_api_route("/v1/token", self.token, methods=["GET"], include_in_schema=False)
        if self.settings.webrtc:
            app.add_api_route(
                "/v1/webrtc/offer", self.webrtc.offer, methods=["POST"], include_in_schema=False
            )
        app.add_api_route("/", _index_page, methods=["GET"], include_in_schema=False)
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
        return app

    def metrics_app(self) -> FastAPI:
        """The ASGI app for the metrics port: `/metrics` only."""
        app = FastAPI(title="voxmesh gateway metrics", docs_url=None, redoc_url=None)
        app.include_router(metrics_router())
        return app

    async def token(self, request: Request) -> JSONResponse:
        """`GET /v1/token`: a short-lived session token for the web page on this machine."""
        refusal = self.access.token_endpoint_refusal(request)
        if refusal is not None:
            GATEWAY_CLIENT_ERRORS.labels(reason="token_endpoint").inc()
            return JSONResponse({"error": refusal}, status_code=403)
        assert self.access.tokens is not None  # Access refuses to start the endpoint without a secret
        body = {"token": self.access.tokens.mint(subject="web"), "expires_in": self.access.tokens.ttl_s}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def realtime(
        self,
        websocket: WebSocket,
        output_sample_rate: int = Query(16_000, ge=8_000, le=48_000),
        token: str | None = None,
        model: str | None = Query(None, max_length=200),
        resume: str | None = None,
    ) -> None:
        """One realtime voice session; refusals come before any Redis write. With a `model` parameter it
        speaks OpenAI's Realtime protocol (docs/openai-realtime.md), without it voxmesh's own
        (docs/protocol.md)."""
        subprotocols = websocket.scope.get("subprotocols", [])
        # Accepted first even when refused: a browser sees the 1008 close and its reason, not a bare failure.
        await websocket.accept(subprotocol=chosen_subprotocol(subprotocols))
        if not self.access.origin_ok(websocket):
            await _refuse(websocket, "origin", "origin not allowed")
            return
        bearer = bearer_token(websocket.headers.get("authorization"))
        if (refusal := self.access.token_refusal(subprotocols, token, bearer)) is not None:
            await _refuse(websocket, "token", refusal)
            return
        # A resume is voxmesh's own protocol: an OpenAI Realtime client starts a new session.
        offered = offered_resume(subprotocols, resume) if model is None else None
        # Sessions parked for a resume hold ASR slots: they count, but for the one this client takes up.
        resuming = key.session_id if offered and (key := ResumeKey.parse(offered)) else None
        address = websocket.client.host if websocket.client else ""
        if (busy := self.admission_refusal(address, resuming=resuming)) is not None:
            await websocket.close(code=1013, reason=busy.reason)
            return
        if model is not None:
            session: GatewaySession = OpenAIRealtimeSession(
                websocket, self.bus, self.settings, model, inbound_writer=self.inbound_writer
            )
        else:
            subject = token_subject(self.access, subprotocols, token)
            claimed = None
            if offered is not None:
                if (claimed := await self._claim(websocket, offered, subject)) is None:
                    return
                self.resumes.resumed(claimed.session_id)
            session = GatewaySession(
                websocket, self.bus, self.settings, output_sample_rate,
                resumes=self.resumes, subject=subject, claimed=claimed, address=address,
                inbound_writer=self.inbound_writer,
            )  # fmt: skip
        async with self.tracked(session, address):
            try:
                await session.run()
            except Exception:
                log.exception("session failed", extra={"session_id": session.session_id})
                await _close_quietly(websocket, 1011, "internal error")

    def admission_refusal(
        self, address: str, pending: int = 0, resuming: str | None = None
    ) -> Refusal | None:
        """Why one more session from `address` must wait (draining, full, too many from it), or None.

        `pending` counts sessions being set up that are not tracked yet (WebRTC offers being answered);
        sessions parked for a resume count too, but for `resuming`, the one this client takes up.
        """
        parked = self.resumes.parked(excluding=resuming)
        if self.readiness.draining or len(self.sessions) + parked + pending >= self.settings.max_sessions:
            return Refusal(503, "try again later")
        per_ip = self.settings.max_sessions_per_ip
        if per_ip and self._per_ip[address] + self.resumes.parked(address, excluding=resuming) >= per_ip:
            GATEWAY_CLIENT_ERRORS.labels(reason="per_ip_limit").inc()
            log.info("session refused", extra={"reason": "too many sessions from one address"})
            return Refusal(429, "too many sessions from this address")
        return None

    @asynccontextmanager
    async def tracked(self, session: GatewaySession, address: str) -> AsyncIterator[None]:
        """Count `session` as open (limits, draining, the sessions gauge) while the block runs."""
        self.sessions.add(session)
        self._per_ip[address] += 1
        self._no_sessions.clear()
        GATEWAY_SESSIONS.inc()
        try:
            yield
        finally:
            self.sessions.discard(session)
            self._per_ip[address] -= 1
            if self._per_ip[address] <= 0:
                del self._per_ip[address]
            if not self.sessions:
                self._no_sessions.set()
            GATEWAY_SESSIONS.dec()

    async def _claim(self, websocket: WebSocket, offered: str, subject: str) -> Claimed | None:
        """The parked session a resuming client asked for; None when it was refused (it is told
        `resume_failed` and closed with 1008)."""
        key = ResumeKey.parse(offered)
        claimed = None
        if key is not None and self.resumes.enabled:
            claimed = await self.resumes.claim(key, subject, {s.session_id: s for s in self.sessions})
        if claimed is None:
            GATEWAY_CLIENT_ERRORS.labels(reason="resume_failed").inc()
            log.info("session refused", extra={"reason": "resume failed"})
            message = "no session to resume: it ended, its window is over, or the key is wrong"
            await websocket.send_json({"type": "error", "code": "resume_failed", "message": message})
            await websocket.close(code=1008, reason="resume failed")
        return claimed

    async def drain(self, grace_s: float) -> None:
        """Refuse new sessions (readiness goes false at once), close each open one (1001 going away) as
        soon as its reply is out, and close the rest near the end of the grace; returns early enough for
        the server to stop within `grace_s`."""
        self.readiness.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace_s - _SERVER_STOP_S)
        cut_at = deadline - min(_CLOSING_S, (deadline - loop.time()) / 2)
        closing: set[GatewaySession] = set()
        while self.sessions and loop.time() < cut_at:
            for session in self.sessions - closing:
                if not session.replying:
                    closing.add(session)  # after what is queued for it: the end of its reply
                    await session.ws.close(1001, "server shutting down")
            await self._wait_no_sessions(min(_DRAIN_POLL_S, max(0.0, cut_at - loop.time())))
        for session in list(self.sessions):
            await session.ws.close_now(1001, "server shutting down")
        await self._wait_no_sessions(max(0.0, deadline - loop.time()))
        await self.webrtc.stop()
        await self.resumes.close()
        await self.inbound_writer.close()

    async def _wait_no_sessions(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._no_sessions.wait()
        except TimeoutError:
            pass


async def _index_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def _refuse(websocket: WebSocket, reason: str, message: str) -> None:
    GATEWAY_CLIENT_ERRORS.labels(reason=reason).inc()
    log.info("session refused", extra={"reason": message})
    await websocket.close(code=1008, reason=message)


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason)
    except (RuntimeError, WebSocketDisconnect):
        pass  # already closed by the client
