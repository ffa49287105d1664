"""How much shorter are replies in economy mode? Tokens per reply on the bundled model, economy off vs on.

Each question is answered twice by the bundled SmolLM2-135M (llama.cpp, greedy) through the LLM service's
own reply path (services/llm/economy.py: the plan, the context, the phrase stream with its sentence cap),
with the service's default settings: once normally, once in economy mode (token cap
VOXMESH_LLM_ECONOMY_MAX_TOKENS, sentence cap VOXMESH_LLM_ECONOMY_SENTENCES, the economy sentence in the
system prompt); and a third time with only the economy sentence in the system prompt, no caps, to show
what the prompt alone does. Output tokens are the engine's own count (the model's tokenizer).

    .venv/bin/python benchmarks/economy_tokens.py [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

from services.llm.economy import PhraseStats, ReplyPlan, fit_context, plan_reply, reply_phrases
from services.llm.engine import ChatMessage, GenerationOptions, Generator, Usage
from services.llm.factory import build_generator
from services.llm.settings import LlmSettings

QUESTIONS = [
    "What is the capital of France?",
    "How does a rainbow form?",
    "Can you tell me about the history of the bicycle?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "How do I learn to play the guitar?",
    "What are the benefits of regular exercise?",
    "Explain how a car engine works.",
    "What is photosynthesis?",
    "Give me some tips for sleeping better.",
]


async def answer(
    generator: Generator, settings: LlmSettings, question: str, economy: bool, caps: bool = True
) -> tuple[int, int]:
    """Output tokens and phrases of one reply (`caps` False: economy's prompt without its caps)."""
    plan = plan_reply(settings, "", economy)
    if not caps:
        plan = ReplyPlan(plan.system_prompt, GenerationOptions(), None, economy=True)
    prompt = fit_context(
        ChatMessage("system", plan.system_prompt), [], ChatMessage("user", question), settings.context_tokens
    )
    usage = Usage()
    phrases = [p async for p in reply_phrases(generator, prompt, plan, usage, PhraseStats(time.monotonic))]
    return usage.output_tokens, len(phrases)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    settings = LlmSettings()
    generator = await asyncio.to_thread(
        build_generator, engine="llama", n_threads=args.threads, max_tokens=settings.max_tokens,
        temperature=settings.temperature,
    )  # fmt: skip
    rows: list[tuple[str, int, int, int, int, int]] = []
    started = time.monotonic()
    try:
        for question in QUESTIONS:
            normal, normal_phrases = await answer(generator, settings, question, economy=False)
            prompted, _ = await answer(generator, settings, question, economy=True, caps=False)
            short, short_phrases = await answer(generator, settings, question, economy=True)
            rows.append((question, normal, prompted, short, normal_phrases, short_phrases))
    finally:
        await generator.aclose()
    print(f"{platform.processor() or platform.machine()}, {time.monotonic() - started:.0f} s")
    print(f"max_tokens {settings.max_tokens}; economy: {settings.economy_max_tokens} tokens, "
          f"{settings.economy_sentences} sentences")  # fmt: skip
    print("| question | tokens (off) | tokens (economy prompt only) | tokens (economy) | phrases (off) "
          "| phrases (economy) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for question, *counts in rows:
        print(f"| {question} | " + " | ".join(str(count) for count in counts) + " |")
    figures = [row[1:] for row in rows]
    means = [statistics.mean(figure[column] for figure in figures) for column in range(5)]
    print("| **mean** | " + " | ".join(f"**{mean:.1f}**" for mean in means) + " |")
    off, prompted, on = (sum(figure[column] for figure in figures) for column in range(3))
    print(
        f"economy replies: {1 - on / off:.0%} fewer tokens ({1 - prompted / off:.0%} from the prompt alone)"
    )


if __name__ == "__main__":
    asyncio.run(main())
