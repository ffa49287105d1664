"""Gateway settings (env prefix VOXMESH_GATEWAY_; session tokens under VOXMESH_TOKEN_)."""

from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.auth import TokenSettings
from shared.settings import ServiceSettings


class IceServer(BaseModel):
    """A STUN or TURN server for WebRTC sessions, as a browser's `RTCIceServer` names it."""

    urls: list[str]
    username: str | None = None
    credential: SecretStr | None = None


class GatewaySettings(ServiceSettings):
    """Limits and policy for client WebSocket sessions."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_GATEWAY_", extra="ignore")

    http_port: int = 8000
    allowed_origins: list[str] = []
    """Browser origins allowed besides the gateway's own; "*" allows any (not for production)."""
    allowed_hosts: list[str] = []
    """Host names a browser may reach the gateway by, besides loopback names and the allowed origins'
    hosts (a DNS-rebinding page reaches it under its own name); "*" allows any (not for production)."""
    auth: Literal["auto", "required", "off"] = "auto"
    """Session tokens: `auto` requires them when `http_host` is beyond loopback, from every client."""
    token_endpoint: bool = False
    """Serve `GET /v1/token` to browsers on this machine (`voxmesh up` turns it on for loopback)."""
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8004
    """`/metrics` has its own port, never the public one (`voxmesh up --port P` puts it on P+4)."""
    max_sessions: int = 200
    max_sessions_per_ip: int = Field(default=32, ge=0)
    """Open sessions one client address may hold (0: no limit); more are refused with 1013. Behind a
    reverse proxy, the address is the one it forwards (uvicorn's `FORWARDED_ALLOW_IPS`)."""
    asr_admission_timeout_s: float = Field(default=15.0, gt=0)
    """A session no ASR replica has taken within this long (all full, or none running) is told
    `server_busy` and closed with 1013. Generous: on a loaded machine (a CI run with other tests beside
    it) a replica with room took more than 5 s to pick a session up, and refusing it then was wrong."""
    max_frame_bytes: int = 32_000
    """Largest PCM frame accepted (1 s at 16 kHz); larger ones get a `frame_too_large` error."""
    ws_max_message_bytes: int = 1 << 20
    """Transport limit: a bigger WebSocket message closes the connection with 1009."""
    input_rate_factor: float = 1.5
    """Input faster than this multiple of real time is dropped with a `rate_limited` error."""
    text_events_per_s: float = Field(default=10.0, gt=0)
    text_burst: int = Field(default=20, ge=1)
    """Text frames beyond this rate (with this burst) are dropped with a `rate_limited` error."""
    idle_timeout_s: float = 300.0
    """A client that sends nothing for this long is closed (1000, "idle")."""
    outbound_queue_bytes: int = Field(default=4 << 20, ge=1 << 16)
    """Events and audio waiting for a slow client; a client that lets more pile up is closed with 1013."""
    client_read_timeout_s: float = Field(default=30.0, gt=0)
    """A frame the client's connection does not take for this long (it stopped reading): closed with
    1013."""
    resume_window_s: float = Field(default=15.0, ge=0, le=300)
    """A client whose connection drops may resume its session within this long (0: never); after it the
    session ends and everything it had in Redis is deleted."""
    shutdown_grace_s: float = 20.0
    economy: bool = False
    """Economy mode for every session unless it turns it off (`session.update`): shorter replies, a
    cheaper model when one is configured (VOXMESH_LLM_ECONOMY_*)."""
    session_token_budget: int | None = Field(default=None, ge=1)
    """LLM tokens (input and output) one session may use; once reached, `budget_action` applies."""
    budget_action: Literal["economy", "refuse"] = "economy"
    """At the budget: switch the session to economy mode, or refuse further replies (`budget_exceeded`)."""
    prefill_hints: bool = True
    """While a user speaks, broadcast the words heard so far to the LLM replicas, so that an idle local model
    reads the prompt ahead (VOXMESH_LLM_PREFILL); hints are best effort and carry no audio."""
    webrtc: bool = True
    """Serve `POST /v1/webrtc/offer`: sessions over WebRTC beside the WebSocket (same limits and tokens)."""
    webrtc_ice_servers: list[IceServer] = []
    """STUN/TURN servers (JSON: `[{"urls": ["stun:host:3478"]}]`); none by default: host candidates only,
    for loopback and the LAN. aiortc uses the first STUN and the first TURN server."""
    webrtc_port_min: int | None = Field(default=None, ge=1, le=65535)
    webrtc_port_max: int | None = Field(default=None, ge=1, le=65535)
    """UDP ports the gateway's WebRTC media may use (both or neither): one port per session and address,
    so a range of N ports holds N sessions per interface. Unset: any port the OS picks."""
    webrtc_connect_timeout_s: float = Field(default=15.0, gt=0)
    """An answered offer whose data channel has not opened within this long (ICE or DTLS failed) is
    dropped."""
    webrtc_max_message_bytes: int = Field(default=16_384, ge=1024)
    """Largest data-channel message accepted; larger ones get a `message_too_large` error."""
    webrtc_max_offer_bytes: int = Field(default=32_768, ge=1024)
    """Largest SDP offer accepted."""

    @model_validator(mode="after")
    def _port_range_whole(self) -> Self:
        low, high = self.webrtc_port_min, self.webrtc_port_max
        if (low is None) != (high is None) or (low is not None and high is not None and low > high):
            raise ValueError("set both VOXMESH_GATEWAY_WEBRTC_PORT_MIN and _MAX, with MIN <= MAX")
        return self

    def webrtc_ports(self) -> range | None:
        """The configured UDP port range, None for any port."""
        if self.webrtc_port_min is None or self.webrtc_port_max is None:
            return None
        return range(self.webrtc_port_min, self.webrtc_port_max + 1)
