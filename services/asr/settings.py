"""ASR service settings (env prefix VOXMESH_ASR_)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AsrSettings(ServiceSettings):
    """Model, endpointing and capacity knobs for speech recognition."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_ASR_", extra="ignore")

    http_port: int = 8001
    model_path: str | None = None
    """A CTranslate2 Whisper folder; default: the bundled tiny.en."""
    cpu_threads: int | None = None
    """Whisper threads; default: this process's share of the CPUs (shared.cpu)."""
    max_sessions: int = 64
    min_silence_ms: int = 400
    """Silence after speech that ends an utterance: the main lever on reply latency."""
    barge_in_min_ms: int = 400
    """Speech must last this long (or be transcribed as words) to cut a reply that is playing: shorter
    sounds (a cough, a click, a bump of the microphone) leave the reply alone. Chosen by measurement,
    see docs/benchmarks.md."""
    partial_interval_ms: int = Field(default=400, ge=0)
    """Re-decode the utterance in progress this often for partial transcripts (0: no partials)."""
    speculative_final: bool = True
    """Transcribe an utterance as soon as the speaker falls silent, while its end is still being
    confirmed; thrown away if they go on. Takes Whisper off the path from end of speech to transcript."""
    shutdown_grace_s: float = 2.0
