"""Local generation with llama.cpp, streamed from a worker thread into the event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_types import ChatCompletionRequestMessage

from services.llm.engine import ChatMessage, GenerationError, GenerationOptions, Usage, as_text_messages
from shared.threadstream import stream_from_thread

log = logging.getLogger(__name__)

# Chat-template tokens around each message; a generous guess keeps trimming on the safe side.
_PER_MESSAGE_OVERHEAD = 8
# What the ChatML template of the bundled model adds around one message: <|im_start|>, the role, a newline,
# <|im_end|> and a newline.
_TEMPLATE_TOKENS = 5
# Deltas generated ahead of the reader: when the service stops reading (it waits for the first phrase to be
# spoken), decoding pauses within a few tokens and the core goes to the synthesizer.
_MAX_PENDING_DELTAS = 4
# Marks where the user's words end in a rendered prompt, to prefill up to there.
_CUT = "\x00\x00voxmesh-prefill-cut\x00\x00"


def _safe_ubatch(requested: int) -> int:
    """Largest decode batch this llama.cpp build survives."""
    # ggml's AMX matmul segfaults on batches > 1 (ggml-org/llama.cpp#20824; reproduced here on Xeon with
    # -march=native builds). One token at a time is safe and, with AMX, decodes ~2x faster anyway.
    if requested > 1 and b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info():
        log.warning("llama.cpp built with AMX: decoding one token per batch to avoid its matmul crash")
        return 1
    return requested


class LlamaCppGenerator:
    """Generator on a GGUF model; one generation at a time, each stoppable within one token."""

    name = "llama.cpp"

    def __init__(
        self,
        model_path: str,
        *,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_ctx: int = 2048,
        max_tokens: int = 256,
        temperature: float = 0.2,
        repeat_penalty: float = 1.1,
        n_ubatch: int = 512,
        warm_up: bool = True,
    ) -> None:
        """Load the model (blocking: call from a thread or before the event loop starts)."""
        # Every llama.cpp call (load, warm-up, decode, free) runs on this one worker thread. Contexts are not
        # thread-safe, and compute from a second thread starts a second OpenMP pool: measured here, decoding
        # then drops from ~260 to ~34 tokens/s for good, as both pools spin on the two cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llama = self._executor.submit(
            Llama,
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            # Not llama-cpp-python's default (every CPU): the prompt is read on the process's own share.
            n_threads_batch=n_threads_batch or n_threads,
            n_ubatch=_safe_ubatch(n_ubatch),
            verbose=False,
        ).result()
        self._n_ctx = n_ctx
        self._max_tokens = max_tokens
        self.model = Path(model_path).stem
        # SmolLM2-135M wanders when hot: on 24 sampled test questions, 0.2 with repeat penalty 1.1 answered 22
        # right, 0.7 answered 18 and drifted into French 4 times.
        self._temperature = temperature
        self._repeat_penalty = repeat_penalty
        self._lock = asyncio.Lock()
        # Raised by every generation: a prefill started before it stops at its next token.
        self._generation = 0
        self._prefilling = False
        self._chat_formatter: Jinja2ChatFormatter | None = None
        if warm_up:
            # The first call pays for buffer allocation; pay it at load, not on the first user turn.
            self._executor.submit(
                self._llama.create_chat_completion, [{"role": "user", "content": "Hi"}], max_tokens=1
            ).result()

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model (its worker thread may still be running)."""
        return self._lock.locked()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        usage: Usage | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield reply deltas; on cancel or early close the worker stops at its next token. Usage is
        counted with the model's own tokenizer (a model override does not apply: one model is loaded)."""
        options = options or GenerationOptions()
        usage = usage if usage is not None else Usage()
        usage.model = self.model
        max_tokens = min(self._max_tokens, options.max_tokens or self._max_tokens)
        self._generation += 1
        async with self._lock:
            generate = functools.partial(self._generate, as_text_messages(messages), max_tokens, usage)
            deltas = stream_from_thread(self._executor, generate, max_pending=_MAX_PENDING_DELTAS)
            try:
                # Holding the lock until the worker is idle keeps the next turn from queueing behind it.
                async for delta in deltas:
                    yield delta
            except Exception as exc:
                raise GenerationError(f"llama.cpp generation failed: {exc}") from exc
            finally:
                # Closed early (the consumer had enough): stop the worker now, not when this is collected,
                # so the model is idle and the usage counted before the lock goes.
                await deltas.aclose()

    async def prefill(self, messages: Sequence[ChatMessage]) -> int:
        """Read the prompt up to the last message's words into the model's cache while it is idle, so that a
        request for that prompt (or one that goes on from it) reads only what follows: on this CPU a prompt
        is read about as fast as a reply is written, one token at a time."""
        if self._lock.locked() or self._prefilling:
            return 0
        self._prefilling = True
        try:
            job = self._executor.submit(self._prefill, as_text_messages(messages), self._generation)
            return await asyncio.wrap_future(job)
        finally:
            self._prefilling = False

    async def aclose(self) -> None:
        """Free the model without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the worker thread and free the model (blocking)."""
        self._executor.submit(self._llama.close).result()
        self._executor.shutdown(wait=True)

    def _generate(
        self,
        messages: list[ChatMessage],
        max_tokens: int,
        usage: Usage,
        emit: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        """Worker thread: run one completion, handing each delta to the loop until done or stopped."""
        if stop.is_set():
            return
        fitted = self._fit_context(messages, max_tokens)
        prefilled = fitted[-1].role == "assistant" and self._formatter() is not None
        pieces = self._continue(fitted, max_tokens) if prefilled else self._chat(fitted, max_tokens)
        generated: list[str] = []
        try:
            for text in pieces:
                if stop.is_set():
                    break
                generated.append(text)
                emit(text)
        finally:
            # Closing the generator is what ends llama.cpp's decode loop when we break out early.
            pieces.close()
            # The stream carries no usage: count with the model's tokenizer (the chat template's tokens
            # around each message are approximated by a constant).
            usage.add_tokens(
                sum(self._cost(m, _TEMPLATE_TOKENS) for m in fitted), self._tokens("".join(generated))
            )

    def _prefill(self, messages: list[ChatMessage], generation: int) -> int:
        """Worker thread: evaluate the prompt's tokens up to the end of the last message's words that the
        cache does not hold yet, one at a time, until a generation starts."""
        formatter = self._formatter()
        if formatter is None or not messages or generation != self._generation:
            return 0
        *before, last = self._fit_context(messages, self._max_tokens)
        rendered = formatter(
            messages=[
                *(cast(ChatCompletionRequestMessage, {"role": m.role, "content": m.text}) for m in before),
                cast(ChatCompletionRequestMessage, {"role": last.role, "content": last.text + _CUT}),
            ]
        )
        head, cut, _ = rendered.prompt.partition(_CUT)
        if not cut:
            return 0
        # Tokenized as llama-cpp-python's chat handler tokenizes the whole prompt, so the request's tokens
        # start with these (but perhaps the last, which the words after it may merge with).
        tokens = self._llama.tokenize(head.encode(), add_bos=not rendered.added_special, special=True)
        llama = self._llama
        cached = Llama.longest_token_prefix(llama._input_ids.tolist(), tokens)
        if cached >= len(tokens):
            return 0
        llama.n_tokens = cached  # eval() drops the cache past this point
        read = 0
        for token in tokens[cached:]:
            if generation != self._generation:
                break
            llama.eval([token])
            read += 1
        return read

    def _chat(self, messages: list[ChatMessage], max_tokens: int) -> Generator[str, None, None]:
        """Worker thread: the reply's text pieces, from the model's chat completion."""
        chunks = self._llama.create_chat_completion(
            messages=[
                cast(ChatCompletionRequestMessage, {"role": m.role, "content": m.text}) for m in messages
            ],
            stream=True,
            max_tokens=max_tokens,
            temperature=self._temperature,
            repeat_penalty=self._repeat_penalty,
        )
        if not isinstance(chunks, Iterator):
            raise GenerationError("llama.cpp did not return a stream")
        try:
            for chunk in chunks:
                text = chunk["choices"][0]["delta"].get("content")
                if isinstance(text, str) and text:
                    yield text
        finally:
            chunks.close()  # type: ignore[attr-defined]

    def _continue(self, messages: list[ChatMessage], max_tokens: int) -> Generator[str, None, None]:
        """Worker thread: the rest of an answer whose start is the last message (a reply taken over
        part-way). Through the chat API the model would see that start as a finished turn and begin a new
        one (the bundled model says it again, word for word, and stops); so the conversation before it
        goes through the chat template and the model goes on from the start's last word."""
        formatter = self._formatter()
        assert formatter is not None
        rendered = formatter(
            messages=[
                cast(ChatCompletionRequestMessage, {"role": m.role, "content": m.text}) for m in messages[:-1]
            ]
        )
        chunks = self._llama.create_completion(
            rendered.prompt + messages[-1].text,
            stream=True,
            max_tokens=max_tokens,
            temperature=self._temperature,
            repeat_penalty=self._repeat_penalty,
            stop=rendered.stop,
        )
        if not isinstance(chunks, Iterator):
            raise GenerationError("llama.cpp did not return a stream")
        try:
            for chunk in chunks:
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        finally:
            chunks.close()  # type: ignore[attr-defined]

    def _formatter(self) -> Jinja2ChatFormatter | None:
        """Worker thread: the model's own chat template (None when the GGUF carries none)."""
        if self._chat_formatter is None and (template := self._llama.metadata.get("tokenizer.chat_template")):
            special = functools.partial(self._llama.detokenize, special=True)
            self._chat_formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=special([self._llama.token_eos()]).decode(errors="replace"),
                bos_token=special([self._llama.token_bos()]).decode(errors="replace"),
            )
        return self._chat_formatter

    def _tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False)) if text else 0

    def _cost(self, message: ChatMessage, overhead: int) -> int:
        return self._tokens(message.text) + overhead

    def _fit_context(self, messages: list[ChatMessage], max_tokens: int) -> list[ChatMessage]:
        """Drop the oldest non-system turns until the prompt leaves room for max_tokens."""
        budget = self._n_ctx - max_tokens
        system = [m for m in messages if m.role == "system"]
        budget -= sum(self._cost(m, _PER_MESSAGE_OVERHEAD) for m in system)
        kept: list[ChatMessage] = []
        for m in reversed([m for m in messages if m.role != "system"]):
            budget -= self._cost(m, _PER_MESSAGE_OVERHEAD)
            if budget < 0 and kept:
                break
            kept.append(m)
        return [*system, *reversed(kept)]
