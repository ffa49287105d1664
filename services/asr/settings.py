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
    """Silence after speech that ends an utterance when the turn policy is off."""
    pause_ms: int = Field(default=150, ge=64, le=390)
    """Silence after speech that counts as a pause: the speculative final and the turn policy's verdict
    start then, and the utterance keeps this much trailing silence."""
    turn_policy: bool = True
    """At each pause (`pause_ms` of silence) judge from the words whether the turn is over
    (services/asr/turn_policy.py): a finished question ends the turn at once, a sentence broken off
    ("What is the capital of …") is given `incomplete_silence_ms` to go on. Off: every utterance ends
    after `min_silence_ms`."""
    incomplete_silence_ms: int = Field(default=1200, ge=200)
    """With the turn policy: the silence that ends an utterance judged unfinished (chosen by measurement,
    see docs/benchmarks.md)."""
    barge_in_min_ms: int = 400
    """Speech must last this long (or be transcribed as words) to cut a reply that is playing: shorter
    sounds (a cough, a click, a bump of the microphone) leave the reply alone. Chosen by measurement,
    see docs/benchmarks.md."""
    partial_interval_ms: int = Field(default=400, ge=0)
    """Re-decode the utterance in progress this often for partial transcripts (0: no partials)."""
    speculative_final: bool = True
    """Transcribe an utterance as soon as the speaker falls silent, while its end is still being
    confirmed; thrown away if they go on. Takes Whisper off the path from end of speech to transcript."""
    short_window: bool = True
    """Encode an utterance under ~28 s in a window sized to it (at least 15 s) instead of Whisper's padded
    30 s: finals several times faster on tiny.en at about the same word error rate
    (benchmarks/asr_window.py); a short decode that looks bad is redone the stock way."""
    shutdown_grace_s: float = 2.0
