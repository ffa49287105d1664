"""Gateway settings (env prefix VOXMESH_GATEWAY_; session tokens under VOXMESH_TOKEN_)."""

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.auth import TokenSettings
from shared.settings import ServiceSettings


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
    max_frame_bytes: int = 32_000
    """Largest PCM frame accepted (1 s at 16 kHz); larger ones get a `frame_too_large` error."""
    ws_max_message_bytes: int = 1 << 20
    """Transport limit: a bigger WebSocket message closes the connection with 1009."""
    input_rate_factor: float = 1.5
    """Input faster than this multiple of real time is dropped with a `rate_limited` error."""
    idle_timeout_s: float = 300.0
    shutdown_grace_s: float = 20.0
