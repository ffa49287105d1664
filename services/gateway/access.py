"""Who may open a realtime session: the browser's Origin and Host, and a session token (docs/security.md).

Every check here runs at the handshake, before the session writes anything to Redis.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from services.gateway.settings import GatewaySettings
from shared.auth import MissingSecretError, TokenError, Tokens

SUBPROTOCOL = "voxmesh"
"""The subprotocol a client offers next to its token; the only one the gateway ever echoes."""
TOKEN_SUBPROTOCOL_PREFIX = "token."
OPENAI_SUBPROTOCOL = "realtime"
"""What OpenAI's browser clients offer, next to `openai-insecure-api-key.<key>` (here: a session token)."""
OPENAI_KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_loopback(host: str | None) -> bool:
    """True for a loopback name or address ("localhost", 127.0.0.0/8, ::1)."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str | None) -> str | None:
    """The name in a `Host` header, lowercased, without port or IPv6 brackets."""
    if not host_header:
        return None
    try:
        return urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def host_allowed(host_header: str | None, allowed_hosts: Collection[str]) -> bool:
    """The request names a host this gateway serves: a loopback name or one of `allowed_hosts`.

    A DNS-rebinding page reaches the gateway under the attacker's name, so its `Host` is not on the list.
    """
    name = host_name(host_header)
    if name is None:
        return False
    return "*" in allowed_hosts or is_loopback(name) or name in {h.lower() for h in allowed_hosts}


def origin_allowed(
    origin: str | None, host: str | None, allowed_origins: Sequence[str], allowed_hosts: Collection[str] = ()
) -> bool:
    """No Origin (not a browser); else the Host must be allowed and the Origin the gateway's own or listed.

    The host names of `allowed_origins` count as allowed hosts (a page served by the gateway itself).
    """
    if origin is None:
        return True
    hosts = {*allowed_hosts, *(name for o in allowed_origins if (name := urlsplit(o).hostname))}
    if not host_allowed(host, hosts):
        return False
    if "*" in allowed_origins or origin in allowed_origins:
        return True
    return urlsplit(origin).netloc.lower() == host.lower() if host else False


def offered_token(
    subprotocols: Sequence[str], query_token: str | None, bearer: str | None = None
) -> str | None:
    """The token a client sent: a `token.<jwt>` (or OpenAI's `openai-insecure-api-key.<jwt>`) subprotocol,
    else an `Authorization: Bearer` header (the `openai` SDK sends its API key so), else the `token` query
    parameter."""
    for protocol in subprotocols:
        for prefix in (TOKEN_SUBPROTOCOL_PREFIX, OPENAI_KEY_SUBPROTOCOL_PREFIX):
            if protocol.startswith(prefix):
                return protocol.removeprefix(prefix)
    return bearer or query_token or None


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, if that is what it is."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def chosen_subprotocol(subprotocols: Sequence[str]) -> str | None:
    """What the handshake answer names: "voxmesh" (or OpenAI's "realtime") when offered, never the token."""
    for name in (SUBPROTOCOL, OPENAI_SUBPROTOCOL):
        if name in subprotocols:
            return name
    return None


def auth_required(mode: str, bind_host: str) -> bool:
    """`required`, or `auto` on an address beyond loopback (0.0.0.0, a LAN address...)."""
    return mode == "required" or (mode == "auto" and not is_loopback(bind_host))


class Access:
    """The gateway's admission rules, fixed at startup; refuses to start a gateway that would run open."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.required = auth_required(settings.auth, settings.http_host)
        self.tokens = Tokens.from_settings(settings.tokens)
        if self.tokens is None and (self.required or settings.token_endpoint):
            raise MissingSecretError(
                f"{self._why_tokens()}, but no token secret is set: set VOXMESH_TOKEN_SECRET or"
                " VOXMESH_TOKEN_SECRET_FILE (at least 32 bytes, e.g. `openssl rand -hex 32`), or run open"
                " on purpose with VOXMESH_GATEWAY_AUTH=off"
            )

    def _why_tokens(self) -> str:
        if not self.required:
            return "VOXMESH_GATEWAY_TOKEN_ENDPOINT is on"
        if self.settings.auth == "required":
            return "VOXMESH_GATEWAY_AUTH=required"
        return f"the gateway listens on {self.settings.http_host}, beyond loopback, so clients need tokens"

    def origin_ok(self, connection: HTTPConnection) -> bool:
        """The Origin/Host rule for this request."""
        headers = connection.headers
        return origin_allowed(
            headers.get("origin"),
            headers.get("host"),
            self.settings.allowed_origins,
            self.settings.allowed_hosts,
        )

    def token_refusal(
        self, subprotocols: Sequence[str], query_token: str | None, bearer: str | None = None
    ) -> str | None:
        """Why the session must be refused for its token ("token required"...), None when admitted."""
        if not self.required:
            return None
        token = offered_token(subprotocols, query_token, bearer)
        if token is None:
            return "token required"
        assert self.tokens is not None  # __init__ refuses to run required without a secret
        try:
            self.tokens.verify(token)
        except TokenError as exc:
            return str(exc)
        return None

    def token_endpoint_refusal(self, connection: HTTPConnection) -> str | None:
        """Why `GET /v1/token` is refused to this request, None when it may have a token.

        Only a browser on this very machine, talking to a loopback name with no proxy in between: behind a
        reverse proxy every client looks local, so a forwarded request never gets one.
        """
        client = connection.client.host if connection.client else None
        headers = connection.headers
        if not is_loopback(client):
            return "only for clients on this machine"
        if not is_loopback(host_name(headers.get("host"))) or any(h in headers for h in _FORWARDED):
            return "only for direct requests to a loopback address"
        if not self.origin_ok(connection):
            return "origin not allowed"
        return None
