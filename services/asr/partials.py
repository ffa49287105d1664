"""Partial transcripts while the user speaks: the words two successive decodes agree on (LocalAgreement).

Whisper re-decodes the growing utterance every few hundred milliseconds; the tail of each hypothesis is
unstable (a word still being spoken, a guess that the next decode revises), so only the prefix that the
last two hypotheses share is committed and shown. Committed words never change until the final.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[\w']+")


def _key(word: str) -> str:
    """How words are compared: case and punctuation do not count ("Paris," == "paris")."""
    return "".join(_WORD.findall(word.lower()))


class LocalAgreement:
    """Commits the prefix of words that two consecutive hypotheses agree on."""

    def __init__(self) -> None:
        self._previous: list[str] = []
        self.committed: list[str] = []

    def update(self, hypothesis: str) -> str | None:
        """Take the next hypothesis; returns the committed text when it grew, else None."""
        words = hypothesis.split()
        agreed = 0
        for old, new in zip(self._previous, words, strict=False):
            if _key(old) != _key(new) or not _key(new):
                break
            agreed += 1
        self._previous = words
        if agreed <= len(self.committed):
            return None
        # Words already shown stay exactly as shown, even if a later decode punctuates them otherwise.
        self.committed = self.committed + words[len(self.committed) : agreed]
        return " ".join(self.committed)

    def reset(self) -> None:
        """A new utterance begins."""
        self._previous = []
        self.committed = []
