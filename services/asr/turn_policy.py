"""At a pause, is the speaker's turn over? Text rules and a small language model decide; audio can help.

When the endpointer reports `SpeechPaused` (150 ms of silence), the session has the audio so far and
Whisper's transcript of it. `TurnPolicy.judge` says COMPLETE (end the turn after the short silence) or
INCOMPLETE (keep listening for the long silence, then end the turn anyway). A wrong COMPLETE splits one
question in two; a wrong INCOMPLETE only costs the long wait, so doubt leans to INCOMPLETE.

The decision, cheapest first:
1. Rules on the words (`judge_text`): no words -> COMPLETE; a last word no sentence ends on ("the", "my",
   "and", "because", "I'm", "um") or a trailing "...", "," or "-" -> INCOMPLETE, whatever the models say.
   A last word that seldom ends one (prepositions, "to", auxiliaries and modals, wh-words, "like") ->
   INCOMPLETE by the rules alone; with a text scorer it decides these too, on its own threshold, since
   "Who is it for?", "What are you up to?" and "What is it made of?" do end there.
2. The text scorer (`SmolLMTurnScorer`): how likely the user's message ends right after these words.
3. The audio model (Smart Turn, `TurnDetector`): decides where there is no text scorer; with one, only
   when `TurnPolicyConfig.require_audio` is set.
4. What the recognizer nearly heard (`Transcription.endings`): a turn judged finished stays open when the
   near misses at the end that the rules would keep open ("… an email to" for "… an email too?", "… for
   my" for "… for mine.") add up to `TurnPolicyConfig.misheard_ending`.

Measured with benchmarks/turn_policy_pauses.py (piper speech, Whisper tiny.en transcripts, 600 ms
pauses): rules + scorer kept 97 % of 286 dev pauses and 98 % of 142 held-out ones open, and closed 87 % /
58 % of finished sentences and 83 % / 85 % of whole paused utterances at once. Requiring Smart Turn as
well kept 98 % / 98 % but closed fewer (finished sentences 77 % / 58 %, whole utterances 60 % / 76 %): on
piper's voice it hears most heads as finished and vetoes more ends than heads. Rules + Smart Turn without
the scorer kept 70 % / 38 %, the rules alone 58 % / 23 %. Smart Turn may do better on human speech.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np

from services.asr.turn_model import TurnDetector

log = logging.getLogger(__name__)


class TurnVerdict(Enum):
    """What the policy makes of a pause."""

    COMPLETE = "complete"
    """The turn is over: end the utterance after the short silence."""
    INCOMPLETE = "incomplete"
    """The speaker is mid-sentence: wait the long silence before ending the utterance."""


# Words a sentence does not end on: articles, possessive determiners, conjunctions, contracted subjects
# ("I'm" is never last: "I am" is), fillers. Whatever the models say, a text ending on one stays open.
OPEN_WORDS = frozenset(
    """
    a an the my your our their its every very
    and or but nor because if unless whether than although
    um uh uhm erm er
    i'm you're we're they're it's that's there's here's what's who's where's how's when's he's she's
    i've you've we've they've i'd you'd he'd she'd we'd they'd it'd
    i'll you'll he'll she'll we'll they'll it'll let's
    """.split()
)
# Words a sentence seldom ends on, but does: "Who is it for?", "What are you up to?", "What is it made of?",
# "Do you know what time it is?", "What's it like?". Rules alone keep these open; a text scorer decides.
# Particles that often end a command ("up", "down", "out", "off", "over", "back") are in neither list.
USUALLY_OPEN_WORDS = frozenset(
    """
    about across against along among at between by during except for from in into like near of on onto
    per through to toward towards under until upon via with within without
    am is are was were be been do does did have has had can could will would shall should may might must
    what who whom whose which where when why how gonna wanna gotta
    """.split()
)
# Whisper marks speech that trails off with "..." (or a comma or dash where the audio stopped).
_TRAILING_MARK = re.compile(r"(\.\.\.|…|[,;:\-–—])\s*$")


def words_of(text: str) -> list[str]:
    """Lowercase words of a transcript, punctuation dropped, apostrophes kept ("what's")."""
    return re.sub(r"[^\w\s']", " ", text.lower().replace("’", "'")).split()


class _Ending(Enum):
    NO_WORDS = "no words"
    TRAILING_MARK = "trailing mark"
    OPEN_WORD = "open word"
    USUALLY_OPEN_WORD = "usually-open word"
    OTHER = "other"


_UNFINISHED_ENDINGS = frozenset({_Ending.TRAILING_MARK, _Ending.OPEN_WORD, _Ending.USUALLY_OPEN_WORD})


def _ending(text: str) -> _Ending:
    words = words_of(text)
    if not words:
        return _Ending.NO_WORDS
    if _TRAILING_MARK.search(text):
        return _Ending.TRAILING_MARK
    # Punctuation is no evidence: Whisper writes "What is the capital of?" for a sentence cut short.
    if words[-1] in OPEN_WORDS:
        return _Ending.OPEN_WORD
    # A lone "Why?" or "What?" is a whole turn.
    if words[-1] in USUALLY_OPEN_WORDS and len(words) > 1:
        return _Ending.USUALLY_OPEN_WORD
    return _Ending.OTHER


def judge_text(text: str) -> TurnVerdict | None:
    """What the words alone say (no model): a verdict, or None when the words cannot tell."""
    ending = _ending(text)
    if ending is _Ending.NO_WORDS:
        return TurnVerdict.COMPLETE  # nothing was said: nothing to wait for
    if ending is _Ending.OTHER:
        return None
    return TurnVerdict.INCOMPLETE


class TextTurnScorer(Protocol):
    """Scores how likely a transcript is a whole turn, from the words alone."""

    async def end_of_turn_probability(self, text: str) -> float:
        """Probability in [0, 1] that a turn may end right after `text` (a non-empty transcript)."""
        ...


# A system line and two earlier exchanges show the model what a user turn looks like here: short spoken
# requests, lowercase, no punctuation, the message over right after the last word. On the pause benchmark's
# dev set this prompt separated heads from finished sentences far better than a bare user turn (at >= 95 %
# of heads kept open: 81 % of finished sentences closed instead of 74 %, the latter even with Smart Turn).
_PROMPT_PREFIX = (
    "<|im_start|>system\nThe user speaks to a voice assistant. Their words are transcribed without"
    " punctuation.<|im_end|>\n"
    "<|im_start|>user\nwhat time is it in tokyo<|im_end|>\n"
    "<|im_start|>assistant\nIt is 9 pm in Tokyo.<|im_end|>\n"
    "<|im_start|>user\nset a timer for ten minutes<|im_end|>\n<|im_start|>assistant\nDone.<|im_end|>\n"
    "<|im_start|>user\n"
)
# Tokens that end a user message: sentence punctuation, a line break, the end of the message.
_END_TOKEN = re.compile(r"[.?!]+\s*|\s*\n\s*|<\|im_end\|>|<\|endoftext\|>")
_MAX_TEXT_TOKENS = 48  # the end of the sentence matters, not its distant beginning


def normalize_for_scorer(text: str) -> str:
    """Lowercase words without punctuation (Whisper punctuates fragments as if they were sentences)."""
    return " ".join(words_of(text))


class SmolLMTurnScorer:
    """SmolLM2-135M-Instruct (llama.cpp, one thread): how likely the user's message ends here.

    The probability is the model's mass on the tokens that end a message (".", "?", "!", a line break,
    `<|im_end|>`) right after the lowercased, unpunctuated text in a user turn, as in LiveKit's turn detector
    (which fine-tunes its model for this; the plain instruct model is used here, and `<|im_end|>` alone gets
    ~1e-5 whatever the text: unpunctuated, the model expects a full stop first). Unfinished text ("i need
    to buy") scores ~0.0002, finished questions mostly 0.1-0.95; short commands score low ("call mom"
    0.07, "is the store open" 0.02), which is where most finished sentences are left INCOMPLETE.

    Loading takes ~2 s; one score ~5 ms per word piece on one thread (one token per batch, see below):
    p50 ~55 ms on the benchmark's transcripts.
    """

    def __init__(self, model_path: str | None = None) -> None:
        """Load the model (blocking: call from a thread or before the event loop starts)."""
        # A llama.cpp context is not thread-safe: the async calls run on this one thread, and the lock
        # covers a blocking `probability` called from elsewhere.
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-turn-text")
        self._executor.submit(self._load, model_path).result()

    def _load(self, model_path: str | None) -> None:
        import llama_cpp  # deferred: only a policy that uses the scorer loads llama.cpp

        from services.llm.factory import bundled_model_path

        # ggml's AMX matmul crashes on batches > 1 (see services/llm/llama.py); one token per batch is safe.
        amx = b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()
        self._llama = llama_cpp.Llama(
            model_path=model_path or bundled_model_path(),
            n_ctx=256,
            n_threads=1,
            n_threads_batch=1,
            n_ubatch=1 if amx else 64,
            verbose=False,
        )
        self._get_logits = llama_cpp.llama_get_logits_ith
        n_vocab = self._llama.n_vocab()
        self._n_vocab = n_vocab
        vocabulary = (
            self._llama.detokenize([i], special=True).decode(errors="replace") for i in range(n_vocab)
        )
        self._end_ids = [i for i, piece in enumerate(vocabulary) if _END_TOKEN.fullmatch(piece)]
        # The prompt's start is the same every time: evaluate it once and keep it in the KV cache.
        self._prefix = self._llama.tokenize(_PROMPT_PREFIX.encode(), add_bos=False, special=True)
        self._llama.n_tokens = 0
        self._llama.eval(self._prefix)
        self.probability("warm up")

    async def end_of_turn_probability(self, text: str) -> float:
        """Probability that the user's message ends right after `text`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.probability, text)

    def probability(self, text: str) -> float:
        """Blocking form of `end_of_turn_probability`, for tests and benchmarks."""
        words = normalize_for_scorer(text)
        if not words:
            return 1.0
        tokens = self._llama.tokenize(words.encode(), add_bos=False, special=False)[-_MAX_TEXT_TOKENS:]
        with self._lock:
            self._llama.n_tokens = len(self._prefix)  # eval drops everything after the cached prefix
            self._llama.eval(tokens)
            last = self._get_logits(self._llama.ctx, -1)
            logits = np.ctypeslib.as_array(last, shape=(self._n_vocab,)).astype(np.float64)
        shifted = np.exp(logits - logits.max())
        return float(shifted[self._end_ids].sum() / shifted.sum())

    def close(self) -> None:
        """Stop the worker thread, waiting for a run already under way."""
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class TurnPolicyConfig:
    """Thresholds of `TurnPolicy`; each probability counts as "finished" at or above its threshold."""

    text_threshold: float = 0.12
    """Text scorer's end-of-turn probability for words that end on no listed word. On the pause benchmark,
    heads scored mostly under 0.05 and finished sentences mostly over 0.1."""
    usually_open_threshold: float = 0.05
    """The same for words ending on a usually-open word ("for", "to", "is"). The scorer puts these low
    either way: heads ending so scored at most 0.03 on the benchmark, finished sentences 0.03-0.9 ("Who is
    it for?" 0.055, "What are you up to?" 0.063, "What is it made of?" 0.71)."""
    audio_threshold: float = 0.5
    """Smart Turn's probability, where the audio decides (no scorer, or `require_audio`)."""
    require_audio: bool = False
    """With a scorer, also require the audio to sound finished. Off: on the benchmark's piper speech it
    traded about as many closed ends for kept pauses as moving `text_threshold` does."""
    misheard_ending: float = 0.15
    """Keep the turn open when the recognizer's near misses that read unfinished ("… an email to" for the
    "… an email too?" it wrote) add up to this probability; 1.0 or more ignores them."""


@dataclass(frozen=True)
class TurnDecision:
    """A verdict with what it rested on (for metrics, debug logs and the benchmark)."""

    verdict: TurnVerdict
    reason: str
    text_probability: float | None = None
    audio_probability: float | None = None
    misheard_probability: float | None = None
    """How likely the recognizer found endings that read unfinished, where that decided."""


class TurnPolicy:
    """Decides at a pause whether the turn is over, from Whisper's transcript and the audio so far."""

    def __init__(
        self,
        detector: TurnDetector | None,
        config: TurnPolicyConfig | None = None,
        *,
        scorer: TextTurnScorer | None = None,
    ) -> None:
        """`detector` hears the audio, `scorer` reads the words; either may be None (see `load`)."""
        self.detector = detector
        self.scorer = scorer
        self.config = config if config is not None else TurnPolicyConfig()

    @classmethod
    def load(cls, detector: TurnDetector | None, config: TurnPolicyConfig | None = None) -> TurnPolicy:
        """A policy with the bundled SmolLM2 text scorer (blocking: loads the model, ~2 s)."""
        return cls(detector, config, scorer=SmolLMTurnScorer())

    def judge_text(self, text: str) -> TurnVerdict | None:
        """What the words alone say (rules, no model): a verdict, or None when the words cannot tell."""
        return judge_text(text)

    async def judge(self, text: str, pcm: bytes, endings: tuple[tuple[str, float], ...] = ()) -> TurnVerdict:
        """COMPLETE or INCOMPLETE for a pause after `pcm` (16 kHz mono s16le), `text` its transcript and
        `endings` the recognizer's near misses at its end (`Transcription.endings`)."""
        return (await self.decide(text, pcm, endings)).verdict

    async def decide(
        self, text: str, pcm: bytes, endings: tuple[tuple[str, float], ...] = ()
    ) -> TurnDecision:
        """`judge` with the reason and the models' probabilities."""
        decision = await self._decide(text, pcm)
        if decision.verdict is TurnVerdict.COMPLETE and words_of(text):
            # The words read finished, but the recognizer nearly heard an unfinished sentence.
            doubt = sum(p for alternative, p in endings if _ending(alternative) in _UNFINISHED_ENDINGS)
            if doubt >= self.config.misheard_ending:
                return TurnDecision(
                    TurnVerdict.INCOMPLETE,
                    "the end may be misheard",
                    decision.text_probability,
                    decision.audio_probability,
                    doubt,
                )
        return decision

    async def _decide(self, text: str, pcm: bytes) -> TurnDecision:
        ending = _ending(text)
        if ending is _Ending.NO_WORDS:
            return TurnDecision(TurnVerdict.COMPLETE, "no words")
        if ending in (_Ending.OPEN_WORD, _Ending.TRAILING_MARK):
            return TurnDecision(TurnVerdict.INCOMPLETE, ending.value)
        text_probability = await self._text_probability(text)
        if text_probability is not None:
            threshold = (
                self.config.usually_open_threshold
                if ending is _Ending.USUALLY_OPEN_WORD
                else self.config.text_threshold
            )
            if text_probability < threshold:
                return TurnDecision(TurnVerdict.INCOMPLETE, "text reads unfinished", text_probability)
            if not self.config.require_audio:
                return TurnDecision(TurnVerdict.COMPLETE, "text reads finished", text_probability)
        elif ending is _Ending.USUALLY_OPEN_WORD:
            return TurnDecision(TurnVerdict.INCOMPLETE, ending.value)
        audio_probability = await self._audio_probability(pcm)
        if audio_probability is None:
            # No model heard the audio (or none is there): the words gave no reason to wait.
            return TurnDecision(TurnVerdict.COMPLETE, "no reason to wait", text_probability)
        finished = audio_probability >= self.config.audio_threshold
        return TurnDecision(
            TurnVerdict.COMPLETE if finished else TurnVerdict.INCOMPLETE,
            "audio sounds finished" if finished else "audio sounds unfinished",
            text_probability,
            audio_probability,
        )

    async def _text_probability(self, text: str) -> float | None:
        if self.scorer is None:
            return None
        try:
            return await self.scorer.end_of_turn_probability(text)
        except Exception:
            log.warning("text end-of-turn scorer failed; judging without it", exc_info=True)
            return None

    async def _audio_probability(self, pcm: bytes) -> float | None:
        if self.detector is None or not pcm:
            return None
        try:
            return await self.detector.end_of_turn_probability(pcm)
        except Exception:
            log.warning("end-of-turn detector failed; judging without it", exc_info=True)
            return None

    def close(self) -> None:
        """Stop the text scorer's worker thread, if it has one (the detector belongs to the caller)."""
        close = getattr(self.scorer, "close", None)
        if close is not None:
            close()
