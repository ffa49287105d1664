"""`POST /v1/webrtc/offer`: the client's SDP offer checked and answered, giving the session's socket.

The offer must carry a microphone (an audio m-line the client sends on) and a data channel (an
application m-line): the events travel there. ICE is not trickled: the answer holds every candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription
from pydantic import BaseModel, ConfigDict, ValidationError

from services.gateway.rtc_media import MicrophoneAudio
from services.gateway.rtc_ports import port_range
from services.gateway.rtc_socket import RtcSocket
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

_SENDING = frozenset({"sendrecv", "sendonly"})
_CLOSE_S = 2.0


class Offer(BaseModel):
    """The body of `POST /v1/webrtc/offer` (what `RTCPeerConnection.localDescription` serializes to)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    type: Literal["offer"]
    sdp: str


class OfferRefused(Exception):
    """The offer cannot be answered: an HTTP status and an error code/message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def parse_offer(body: bytes) -> Offer:
    """The request body as an offer; raises `OfferRefused` (400 `bad_offer`)."""
    try:
        return Offer.model_validate_json(body)
    except ValidationError as exc:
        raise OfferRefused(400, "bad_offer", 'the body must be JSON {"type": "offer", "sdp": "..."}') from exc


def check_offer(sdp: str) -> None:
    """Refuse what aiortc would answer uselessly: no parseable SDP, no microphone, no data channel."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever the malformed line trips on
        raise OfferRefused(400, "bad_sdp", "the offer's SDP cannot be parsed") from exc
    if not sdp.startswith("v=0") or not description.media:
        # aiortc's parser skips lines it does not know: nothing recognized is no offer at all.
        raise OfferRefused(400, "bad_sdp", "the offer's SDP has no media sections")
    kinds = {media.kind for media in description.media}
    if not any(media.kind == "audio" and media.direction in _SENDING for media in description.media):
        raise OfferRefused(400, "no_audio", "the offer has no audio track sent to the gateway (a microphone)")
    if "application" not in kinds:
        raise OfferRefused(400, "no_data_channel", "the offer has no data channel (events travel on it)")


def rtc_configuration(settings: GatewaySettings) -> RTCConfiguration:
    """ICE servers from the settings; none at all by default (aiortc would otherwise ask a public STUN
    server): host candidates, for loopback and the LAN."""
    servers = [
        RTCIceServer(
            urls=server.urls,
            username=server.username,
            credential=server.credential.get_secret_value() if server.credential else None,
        )  # fmt: skip
        for server in settings.webrtc_ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


async def answer_offer(offer: Offer, settings: GatewaySettings, max_buffered_bytes: int) -> RtcSocket:
    """A peer connection answering `offer`, wrapped as the session's socket (its answer in
    `socket.pc.localDescription`); raises `OfferRefused`."""
    check_offer(offer.sdp)
    pc = RTCPeerConnection(rtc_configuration(settings))
    tracks: list[MediaStreamTrack] = []
    pc.on("track", lambda track: tracks.append(track) if track.kind == "audio" else None)
    try:
        with port_range(settings.webrtc_ports()):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            if not tracks:
                raise OfferRefused(400, "no_audio", "the offer has no audio track sent to the gateway")
            socket = RtcSocket(
                pc, MicrophoneAudio(tracks[0]), max_message_bytes=settings.webrtc_max_message_bytes,
                max_buffered_bytes=max_buffered_bytes,
            )  # fmt: skip
            pc.addTrack(socket.track)
            await pc.setLocalDescription(await pc.createAnswer())
    except OfferRefused:
        await _close(pc)
        raise
    except Exception as exc:  # aiortc refuses a bad offer with ValueError, its own errors, KeyError...
        await _close(pc)
        log.info("offer refused", extra={"reason": type(exc).__name__})
        message = "the offer cannot be answered (malformed or unsupported SDP)"
        raise OfferRefused(400, "bad_sdp", message) from exc
    except BaseException:  # the client left mid-answer (cancelled): its sockets must not stay open
        await _close(pc)
        raise
    return socket


async def _close(pc: RTCPeerConnection) -> None:
    """Close a peer connection that never became a session, within a bound."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_CLOSE_S):
            await pc.close()
