"""Session tokens: short-lived HS256 JWTs (PyJWT) that let a client open a realtime session.

A token grants one thing: opening `/v1/realtime` sessions on a gateway that shares its secret, until it
expires. It names no session and carries no permissions beyond that. Never log a token or the secret.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import jwt
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

AUDIENCE = "voxmesh"
MIN_SECRET_BYTES = 32
"""HS256 wants a key at least as long as its hash (RFC 7518 §3.2)."""
MAX_TOKEN_CHARS = 4096
MAX_TTL_S = 86_400
_ALGORITHM = "HS256"
_LEEWAY_S = 5  # clock skew between the minting machine and the gateway
# A token (or a session's resume key) in a query string, as a subprotocol, or bare (a JWT starts with the
# base64 of `{"`).
_TOKEN_IN_TEXT = re.compile(
    r"(?P<keep>(?:^|[?&])(?:token|resume)=|(?:token|resume)\.)[A-Za-z0-9_.%\-]+"
    r"|eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_.\-]+"
)


class TokenError(Exception):
    """A token that opens no session; the message is safe to send back (it never holds the token)."""


class MissingSecretError(RuntimeError):
    """No usable signing secret is configured."""


class TokenSettings(BaseSettings):
    """Where the signing secret comes from and how long a token lives (env prefix VOXMESH_TOKEN_)."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_TOKEN_", extra="ignore")

    secret: SecretStr | None = None
    secret_file: Path | None = None
    """A mounted file holding the secret (Kubernetes/compose secrets); used when `secret` is unset."""
    ttl_s: int = Field(default=600, ge=1, le=MAX_TTL_S)
    """Lifetime of a minted token; a session opened with it may outlive it (checked at the handshake)."""
    audience: str = AUDIENCE

    def key(self) -> bytes | None:
        """The signing secret from the env or the secret file; None when neither is set."""
        if self.secret is not None and self.secret.get_secret_value():
            value = self.secret.get_secret_value()
            source = "VOXMESH_TOKEN_SECRET"
        elif self.secret_file is not None:
            try:
                value = self.secret_file.read_text().strip()
            except OSError as exc:
                raise MissingSecretError(f"cannot read VOXMESH_TOKEN_SECRET_FILE ({exc.strerror})") from None
            source = f"VOXMESH_TOKEN_SECRET_FILE ({self.secret_file})"
        else:
            return None
        key = value.encode()
        if len(key) < MIN_SECRET_BYTES:
            raise MissingSecretError(
                f"{source} must hold at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            )
        return key


class Tokens:
    """Mints and verifies session tokens with one secret; holds the key privately (never in a repr)."""

    def __init__(self, key: bytes, audience: str = AUDIENCE, ttl_s: int = 600) -> None:
        if len(key) < MIN_SECRET_BYTES:
            raise MissingSecretError(f"the token secret must hold at least {MIN_SECRET_BYTES} bytes")
        self._key = key
        self.audience = audience
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> Tokens | None:
        """Tokens for the configured secret; None when no secret is configured."""
        key = settings.key()
        return None if key is None else cls(key, settings.audience, settings.ttl_s)

    def mint(self, subject: str | None = None, ttl_s: int | None = None, now: float | None = None) -> str:
        """A signed token valid for `ttl_s` seconds (default: the configured lifetime)."""
        issued = int(time.time() if now is None else now)
        lifetime = self.ttl_s if ttl_s is None else ttl_s
        if not 1 <= lifetime <= MAX_TTL_S:
            raise ValueError(f"a token lives 1..{MAX_TTL_S} s, not {lifetime}")
        claims: dict[str, Any] = {"aud": self.audience, "iat": issued, "exp": issued + lifetime}
        if subject:
            claims["sub"] = subject
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is signed with this secret, for this audience, and not expired."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("token invalid")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=self.audience,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iat", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidTokenError:
            raise TokenError("token invalid") from None
        return claims


def redact(text: str) -> str:
    """`text` with any token (query parameter, subprotocol or bare JWT) or resume key replaced by "***"."""
    return _TOKEN_IN_TEXT.sub(lambda m: f"{m.group('keep') or ''}***", text)


class _RedactTokens(logging.Filter):
    """Takes tokens out of a record before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (redacted := redact(message)) != message:
            record.msg, record.args = redacted, None
        return True


_REDACT = _RedactTokens()


def redact_token_logs(*logger_names: str) -> None:
    """Filter tokens out of these loggers' records (idempotent): uvicorn logs each WebSocket's path with
    its query string, and the websockets library logs handshake headers at debug level."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)
