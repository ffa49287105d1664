"""What a reply may cost: economy mode (a shorter reply, maybe from a cheaper model), the bound on the prompt
(the oldest turns dropped to fit the context budget), the phrase stream that stops at economy mode's
sentence cap, and token estimates for engines that give no figures."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from services.llm.continuation import continuation_prompt, without_restatement
from services.llm.engine import ChatMessage, GenerationOptions, Generator, Usage
from services.llm.phrases import PhraseChunker
from services.llm.settings import LlmSettings

# A rough rule for English text across common tokenizers; used only where no engine count is available.
_CHARS_PER_TOKEN = 4
# Chat-template tokens around each message, in estimates.
_MESSAGE_OVERHEAD_TOKENS = 4
_SENTENCE_END = ".!?…"
_CLOSERS = "\"')]}”’»*_"


def estimate_tokens(text: str) -> int:
    """Tokens `text` is likely to take (about four characters each)."""
    return -(-len(text) // _CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """Tokens a prompt is likely to take, template included."""
    return sum(estimate_tokens(m.text) + _MESSAGE_OVERHEAD_TOKENS for m in messages)


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """How one reply is asked for: its system prompt, the engine overrides, and a sentence cap."""

    system_prompt: str
    options: GenerationOptions
    max_sentences: int | None
    economy: bool


def plan_reply(settings: LlmSettings, instructions: str, economy: bool) -> ReplyPlan:
    """The plan for one reply: the session's instructions join the system prompt; economy mode caps tokens
    and sentences, says so in the system prompt, and picks the economy model when one is configured."""
    system = settings.system_prompt
    if economy:
        system = f"{system} {settings.economy_prompt}"
    if instructions:
        system = f"{system}\n\n{instructions}"
    if not economy:
        return ReplyPlan(system, GenerationOptions(), None, economy=False)
    options = GenerationOptions(
        max_tokens=min(settings.economy_max_tokens, settings.max_tokens), model=settings.economy_model
    )
    return ReplyPlan(system, options, settings.economy_sentences, economy=True)


def fit_context(
    system: ChatMessage, history: Sequence[ChatMessage], question: ChatMessage | None, budget_tokens: int
) -> list[ChatMessage]:
    """The prompt within `budget_tokens` (estimated): the system prompt and the question always, and the
    newest part of the history that fits; older turns are dropped, and the kept history starts with a
    user message so the model never sees an answer without its question. No question (a reply the client
    asked for with no new words): the history ends the prompt."""
    asked = [] if question is None else [question]
    left = budget_tokens - estimate_prompt_tokens([system, *asked])
    kept: list[ChatMessage] = []
    for message in reversed(history):
        left -= estimate_prompt_tokens([message])
        if left < 0:
            break
        kept.append(message)
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)
    return [system, *kept, *asked]


def ends_sentence(phrase: str) -> bool:
    """Whether a phrase ends a sentence (rather than a clause the first phrase may end at)."""
    stripped = phrase.rstrip().rstrip(_CLOSERS)
    return bool(stripped) and stripped[-1] in _SENTENCE_END


class PhraseStats:
    """What the phrase stream saw: when text first and last came (by `clock`), and the text."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None
        self.paused_s = 0.0
        """Time the consumer stopped reading (the first phrase waiting for its audio), not generation's."""
        self.text = ""

    def tokens_per_second(self, output_tokens: int) -> float | None:
        """Generation speed after the first token, pauses excluded; None when too little was generated."""
        if self.first_text_at is None or self.last_text_at is None or output_tokens < 2:
            return None
        elapsed = self.last_text_at - self.first_text_at - self.paused_s
        return (output_tokens - 1) / elapsed if elapsed > 0 else None


async def reply_phrases(
    generator: Generator,
    prompt: Sequence[ChatMessage],
    plan: ReplyPlan,
    usage: Usage,
    stats: PhraseStats,
    said: Sequence[str] = (),
) -> AsyncGenerator[str, None]:
    """The reply as speakable phrases, stopping the model once `plan.max_sentences` sentences are out.

    `said`: phrases of this reply already sent (a reply taken over part-way); the model is asked to go on
    after them and only the phrases after them are yielded."""
    chunker = PhraseChunker()
    if said:
        chunker.after_first()
    cap = SentenceCap(plan.max_sentences)
    if any(cap.reached(phrase) for phrase in said):
        return
    deltas = generator.stream(continuation_prompt(prompt, said), options=plan.options, usage=usage)
    source = without_restatement(deltas, said) if said else deltas
    try:
        async for delta in source:
            stats.last_text_at = stats.clock()
            if stats.first_text_at is None:
                stats.first_text_at = stats.last_text_at
            stats.text += delta
            for phrase in chunker.push(delta):
                yield phrase
                if cap.reached(phrase):
                    return  # closing the stream (below) stops the model
    finally:
        # The filter first (it reads `deltas`), then the engine's stream, which stops the model.
        streams = [deltas] if source is deltas else [source, deltas]
        for stream in streams:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
    for phrase in chunker.flush():
        yield phrase
        if cap.reached(phrase):
            return


class SentenceCap:
    """Counts the sentences of a reply against a cap (None: no cap)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.sentences = 0

    def reached(self, phrase: str) -> bool:
        """Count `phrase`; whether the reply has had its last sentence now."""
        self.sentences += ends_sentence(phrase)
        return self.limit is not None and self.sentences >= self.limit
