"""What the translator keeps of the conversation: user items by turn, responses in progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.gateway.openai_realtime.config import AUDIO_RATE
from shared.audio import SAMPLE_WIDTH

KEPT_ITEMS = 64
"""Items remembered per session (for truncation and transcription deltas): the newest."""


@dataclass
class UserItem:
    """The user's item of one spoken turn."""

    id: str
    started_ms: int
    partial: str = ""
    stopped: bool = False
    committed: bool = False


@dataclass
class ResponseState:
    """One response (one native turn's reply) as the client has been told of it."""

    turn_id: int
    id: str
    item_id: str | None = None
    """The assistant message item, once the response has text or audio."""
    message_index: int = 0
    transcript: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    """Output items in order (the message item is filled in when the response ends)."""
    status: str = "in_progress"
    details: dict[str, Any] | None = None
    text_only: bool = False
    """`output_modalities: ["text"]`: the words as `output_text`, no audio (the mesh still speaks them)."""

    @property
    def text(self) -> str:
        """The words of the response so far."""
        return " ".join(self.transcript)

    def part(self) -> dict[str, Any]:
        """The message's content part so far, as `response.content_part.*` carries it."""
        return (
            {"type": "text", "text": self.text}
            if self.text_only
            else {"type": "audio", "transcript": self.text}
        )


def bound(items: dict[Any, Any]) -> None:
    """Forget the oldest entries beyond `KEPT_ITEMS`."""
    while len(items) > KEPT_ITEMS:
        del items[next(iter(items))]


def audio_ms(pcm_bytes: int) -> int:
    """Milliseconds of 24 kHz s16le audio."""
    return pcm_bytes * 1000 // (SAMPLE_WIDTH * AUDIO_RATE)
