"""`POST /v1/webrtc/offer`: a realtime session over WebRTC, admitted like a WebSocket one (Origin, token,
limits) and then run by the same `GatewaySession` (docs/protocol.md, "WebRTC").

Refusals are HTTP answers with `{"error": {"code", "message"}}`: 400 for a bad offer, 401 for the token,
403 for the origin, 413 for an oversized body, 429/503 for the limits. They come before any Redis write.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import JSONResponse

from services.gateway.rtc_offer import OfferRefused, answer_offer, parse_offer
from services.gateway.rtc_socket import RtcSocket
from services.gateway.session import GatewaySession
from shared.metrics import GATEWAY_CLIENT_ERRORS

if TYPE_CHECKING:
    from services.gateway.app import Gateway

log = logging.getLogger(__name__)

RTC_OUTPUT_RATE = 48_000
"""Reply audio asked of the TTS for a WebRTC session: the track's own rate, so nothing is resampled twice."""
_BEARER = "bearer "


class WebRtcEndpoint:
    """Answers offers and owns the tasks of the WebRTC sessions it started."""

    def __init__(self, gateway: Gateway) -> None:
        # aioice logs every candidate pair and address at INFO: noise, and client addresses besides.
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.gateway = gateway
        self.settings = gateway.settings
        self._answering = 0  # offers being answered: they hold a session's place
        self._tasks: set[asyncio.Task[None]] = set()

    async def offer(self, request: Request) -> JSONResponse:
        """Answer the client's SDP offer and start its session."""
        gateway = self.gateway
        if not gateway.access.origin_ok(request):
            return _refused(403, "origin", "origin not allowed")
        token = _bearer(request.headers.get("authorization")) or request.query_params.get("token")
        if (why := gateway.access.token_refusal((), token)) is not None:
            return _refused(401, "token", why)
        address = request.client.host if request.client else ""
        if (busy := gateway.admission_refusal(address, pending=self._answering)) is not None:
            return _refused(busy.status, "server_busy", busy.reason)
        self._answering += 1
        try:
            body = await _read_limited(request, self.settings.webrtc_max_offer_bytes)
            if body is None:
                return _refused(413, "offer_too_large", "the offer is too large")
            socket = await answer_offer(parse_offer(body), self.settings, self.settings.outbound_queue_bytes)
        except OfferRefused as refused:
            return _refused(refused.status, refused.code, refused.message)
        finally:
            self._answering -= 1
        session = GatewaySession(
            socket, gateway.bus, self.settings, RTC_OUTPUT_RATE, inbound_writer=gateway.inbound_writer
        )
        task = asyncio.create_task(self._serve(session, socket, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        answer = socket.pc.localDescription
        return JSONResponse(
            {"type": answer.type, "sdp": answer.sdp, "session_id": session.session_id},
            headers={"Cache-Control": "no-store"},
        )

    async def _serve(self, session: GatewaySession, socket: RtcSocket, address: str) -> None:
        """Run one WebRTC session once its data channel opens; always hangs the peer connection up."""
        async with self.gateway.tracked(session, address):
            try:
                socket.start()
                if not await socket.wait_open(self.settings.webrtc_connect_timeout_s):
                    GATEWAY_CLIENT_ERRORS.labels(reason="webrtc_connect").inc()
                    log.info("webrtc session never connected", extra={"session_id": session.session_id})
                    return
                async with asyncio.TaskGroup() as group:
                    pump = group.create_task(socket.pump_microphone())
                    try:
                        await session.run()
                    except Exception:
                        log.exception("session failed", extra={"session_id": session.session_id})
                        await socket.close(1011, "internal error")
                    finally:
                        pump.cancel()
            finally:
                await asyncio.shield(socket.hang_up())

    async def stop(self) -> None:
        """Cancel the sessions still running (the gateway is stopping, its grace is over)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith(_BEARER):
        return header[len(_BEARER) :].strip() or None
    return None


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, None once it passes `limit` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _refused(status: int, code: str, message: str) -> JSONResponse:
    GATEWAY_CLIENT_ERRORS.labels(reason=code).inc()
    log.info("webrtc offer refused", extra={"reason": message})
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
