"""LLM service settings (env prefix VOXMESH_LLM_; the Gemini key also from GEMINI_API_KEY/GOOGLE_API_KEY)."""

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class LlmSettings(ServiceSettings):
    """Which model answers, how it is prompted, and how much history it sees."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_LLM_", extra="ignore")

    http_port: int = 8002
    engine: Literal["auto", "llama", "gemini", "openai"] = "auto"
    """Which engine answers; auto: an OpenAI-compatible server when its URL is set, else Gemini when a key
    is, else the bundled llama.cpp model."""
    gemini_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("VOXMESH_LLM_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"),
    )
    gemini_api_key_file: Path | None = None
    """A mounted secret holding the key (Kubernetes/compose secrets); used when no key is in the env."""
    gemini_model: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    openai_base_url: str | None = None
    """An OpenAI-compatible API, e.g. http://localhost:11434/v1 (Ollama) or http://vllm:8000/v1."""
    openai_model: str = "default"
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VOXMESH_LLM_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_api_key_file: Path | None = None
    tools: bool = True
    """Offer the built-in tools to engines with function calling (Gemini, OpenAI-compatible); the bundled
    135M model gets none: it cannot call them reliably."""
    time_zone: str = "UTC"
    """The user's IANA time zone, for the clock tool."""
    weather_url: str | None = "https://api.open-meteo.com"
    geocoding_url: str | None = "https://geocoding-api.open-meteo.com"
    search_url: str | None = None
    """A SearXNG-compatible server (JSON search); web search is off when unset."""
    tool_filler: str = "Let me check."
    tool_filler_after_ms: int = Field(default=800, ge=0)
    """How long tools may run before the filler is said, so the user is not left in silence."""
    model_path: str | None = None
    """A GGUF file for llama.cpp; default: the bundled SmolLM2-135M-Instruct."""
    n_threads: int | None = None
    """llama.cpp threads; default: this process's share of the CPUs (shared.cpu)."""
    n_threads_batch: int | None = None
    """llama.cpp threads for reading the prompt; default: `n_threads`. (llama-cpp-python's own default is
    every CPU of the machine, more than the process's share when services share the cores.)"""
    max_tokens: int = 160
    temperature: float = 0.0
    """Greedy by default: the 135M offline model drifts into French when it samples."""
    system_prompt: str = (
        "You are a helpful voice assistant. What you write is spoken aloud, so answer in short, plain spoken "
        "sentences, with no lists, markdown, code, links or emoji."
    )
    """For voice: on six test questions the bundled model's answers got shorter and plainer with it than with
    "You are a helpful assistant." (same facts); lists that still slip through are made speakable for TTS."""
    history_messages: int = 20
    context_tokens: int = Field(default=2000, ge=200)
    """Bound on the prompt (system prompt, history, question) in estimated tokens: the oldest turns of the
    history are dropped until it fits."""
    economy_max_tokens: int = Field(default=60, ge=1)
    """Economy mode (per session, or the gateway's default): the reply length cap in tokens."""
    economy_sentences: int = Field(default=2, ge=1)
    """Economy mode: the reply stops after this many sentences."""
    economy_model: str | None = None
    """Economy mode: a cheaper model of the same vendor (OpenAI-compatible or Gemini engines; the bundled
    model has none), e.g. gemini-2.5-flash-lite."""
    economy_prompt: str = "Keep your answer short: at most two brief sentences."
    """Economy mode: added to the system prompt."""
    concurrency: int = 1
    first_phrase_yield_ms: int = Field(default=2000, ge=0)
    """Once the first phrase is out, stop reading the model until its first audio is (at most this long;
    0: never wait). A local model pauses within a few tokens, so the synthesizer has the CPU to itself and
    first audio comes sooner; the rest of the reply has the first phrase's playback to catch up."""
    prefill: bool = True
    """Read the prompt ahead while the user speaks (the gateway's hints: the history, then the words heard so
    far), when the local model is idle, so a request reads only its last words. llama.cpp only."""

    def gemini_key(self) -> str | None:
        """The Gemini key from the env or the secret file, if any."""
        return _secret(self.gemini_api_key, self.gemini_api_key_file)

    def openai_key(self) -> str | None:
        """The OpenAI-compatible server's key from the env or the secret file, if any."""
        return _secret(self.openai_api_key, self.openai_api_key_file)


def _secret(value: SecretStr | None, file: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip() or None
    return None
