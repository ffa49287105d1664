"""Settings shared by every service; each service subclasses with its own env prefix."""

import os
import socket

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus import DEFAULT_CLAIM_IDLE_MS


def _default_consumer() -> str:
    # Pod names change on restart; pid keeps two local replicas apart.
    return f"{socket.gethostname()}-{os.getpid()}"


class ServiceSettings(BaseSettings):
    """Common knobs: where Redis is, where the HTTP side listens, how to log, how leases work."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("VOXMESH_REDIS_URL", "REDIS_URL"),
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    log_level: str = "info"
    consumer_name: str = Field(default_factory=_default_consumer)
    claim_idle_ms: int = Field(default=DEFAULT_CLAIM_IDLE_MS, ge=1000)
    """An entry idle this long is taken to be abandoned by a dead replica and is taken over."""
    shutdown_grace_s: float = 10.0
    cpu_share: int = Field(default=1, ge=1, validation_alias=AliasChoices("VOXMESH_CPU_SHARE"))
    """How many model services share this process's CPUs; their inference threads split the CPUs
    (`voxmesh up` sets 3; a container with its own CPU limit keeps 1)."""
