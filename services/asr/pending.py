"""An ended utterance on its way to a transcript."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.asr.endpointer import SpeechEnded


@dataclass(frozen=True, slots=True)
class PendingUtterance:
    """An ended utterance waiting for its transcript (maybe already being made, speculatively)."""

    utterance_id: int
    ended: SpeechEnded
    ended_at: float
    speculation: asyncio.Task[str | None] | None
    end_entry: bytes
    """The audio entry whose feeding ended the utterance: once its final is out, a new owner resumes there."""
