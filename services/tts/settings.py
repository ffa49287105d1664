"""TTS service settings (env prefix VOXMESH_TTS_)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class TtsSettings(ServiceSettings):
    """Voice and capacity knobs for speech synthesis."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_TTS_", extra="ignore")

    http_port: int = 8003
    chunk_ms: int = 100
    """Largest audio chunk put on the bus: small enough to start playback early."""
    concurrency: int = 1
    threads: int | None = None
    """onnxruntime threads for the voice; default: every CPU this process may use (shared.cpu). Its threads
    do not spin, so they hold a core only while they synthesize: on two cores the first phrase comes ~1.6x
    sooner than on one thread, and no later with a core kept busy by another process (docs/benchmarks.md)."""
