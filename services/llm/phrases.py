"""Turn a stream of LLM text deltas into speakable phrases for TTS, as early as is safe."""

from __future__ import annotations

import re

_TERMINATORS = ".!?…"
_CLOSERS = "\"')]}”’»*_"
_CLAUSE_MARKS = ",;:"
_EM_DASH = "—"
# Period-final words that rarely end a sentence; single letters ("U.S.", "e.g.", "J.") match a pattern.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "approx"})
_LETTER_DOTS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")
_MARKDOWN = re.compile(r"[*#`~]|^\s*(?:[-+•]|>+)\s+")


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _word_count(text: str) -> int:
    return sum(1 for token in text.split() if _has_word(token))


def clean_phrase(text: str) -> str:
    """Drop markdown symbols a TTS would read aloud and collapse whitespace."""
    return " ".join(_MARKDOWN.sub("", text).split())


class PhraseChunker:
    """Accumulates deltas; emits a phrase once its end is certain, so splits never depend on delta boundaries.

    A phrase ends at a newline, or at . ! ? … followed by whitespace (not after decimals or abbreviations).
    The first phrase of a reply may also end at a clause mark once it has `first_min_words` words, and
    is cut after `first_max_words` words when no mark comes, so the first audio starts soon whatever the
    first sentence is. Anything longer than `max_chars` is cut at its last space.
    """

    def __init__(self, *, first_min_words: int = 4, first_max_words: int = 10, max_chars: int = 220) -> None:
        self.first_min_words = first_min_words
        self.first_max_words = first_max_words
        self.max_chars = max_chars
        self._buf = ""
        self._first = True

    def after_first(self) -> None:
        """The reply's first phrase is out already (a reply taken over part-way): no early cut."""
        self._first = False

    def push(self, delta: str) -> list[str]:
        """Add a delta; return the phrases it completed."""
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of stream: return everything left, and reset for the next reply."""
        phrases = self._drain(final=True)
        rest = clean_phrase(self._buf)
        if _has_word(rest):
            phrases.append(rest)
        self._buf = ""
        self._first = True
        return phrases

    def _drain(self, *, final: bool) -> list[str]:
        phrases: list[str] = []
        while (cut := self._next_cut(final)) is not None:
            phrase, self._buf = clean_phrase(self._buf[:cut]), self._buf[cut:]
            if _has_word(phrase):
                phrases.append(phrase)
                self._first = False
        return phrases

    def _next_cut(self, final: bool) -> int | None:
        """Index just past the first certain phrase end in the buffer, or None to wait for more text."""
        buf = self._buf
        word_cut = self._word_cut(buf) if self._first else None
        for i, ch in enumerate(buf):
            if i >= self.max_chars:
                break
            if word_cut is not None and i >= word_cut:
                return word_cut
            cut = self._boundary_at(buf, i, ch, final)
            if cut is not None and cut <= self.max_chars:
                return cut
        if word_cut is not None and word_cut <= self.max_chars:
            return word_cut
        if len(buf) > self.max_chars:
            # Every boundary within max_chars is decided by now (its look-ahead exists), so the cut is stable.
            space = buf.rfind(" ", 1, self.max_chars + 1)
            return space if space > 0 else self.max_chars
        return None

    def _boundary_at(self, buf: str, i: int, ch: str, final: bool) -> int | None:
        if ch == "\n":
            return i + 1
        if self._first and ch == _EM_DASH and self._ends_first_clause(buf[: i + 1]):
            return i + 1
        if ch in _TERMINATORS:
            end = i + 1
            while end < len(buf) and buf[end] in _TERMINATORS:
                end += 1
            while end < len(buf) and buf[end] in _CLOSERS:
                end += 1
            if not self._followed_by_space(buf, end, final):
                return None
            if buf[i:end].rstrip(_CLOSERS) == "." and _is_abbreviation(buf[:i]):
                return None
            # "1. " opening a list item is not a sentence; wait for its text.
            return end if any(c.isalpha() for c in buf[:end]) else None
        if self._first and ch in _CLAUSE_MARKS and self._ends_first_clause(buf[: i + 1]):
            return i + 1 if self._followed_by_space(buf, i + 1, final) else None
        return None

    def _word_cut(self, buf: str) -> int | None:
        """Just past the `first_max_words`-th word, once a space shows that word is complete."""
        count = 0
        in_word = False
        for i, ch in enumerate(buf):
            if ch.isspace():
                if in_word:
                    count += 1
                    if count == self.first_max_words:
                        return i
                in_word = False
            else:
                in_word = True
        return None

    def _ends_first_clause(self, phrase: str) -> bool:
        return _word_count(phrase) >= self.first_min_words

    @staticmethod
    def _followed_by_space(buf: str, end: int, final: bool) -> bool:
        return buf[end].isspace() if end < len(buf) else final


def _is_abbreviation(before: str) -> bool:
    """Whether the word ending right before a period is an abbreviation rather than a sentence's end."""
    word = before.rsplit(maxsplit=1)[-1] if before.strip() else ""
    word = word.lstrip("\"'([{“‘*_")
    return bool(_LETTER_DOTS.fullmatch(word)) or word.lower() in _ABBREVIATIONS
