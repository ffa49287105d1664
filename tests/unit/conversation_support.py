"""Fakes for the gateway's turn logic: effects that record, a clock that is set by hand, scripted turns."""

from __future__ import annotations

import asyncio
from typing import Any

from services.gateway.conversation import Conversation
from services.gateway.playback import ReplyTrack
from shared.history import HistoryEntry

RATE = 16_000
SECOND = RATE * 2  # bytes of one second of reply audio


class FakeEffects:
    """Records what the conversation did; `open_turn` counts like Redis INCR and may be slowed down."""

    def __init__(self) -> None:
        self.counter = 0
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[int, str]] = []
        self.history: list[HistoryEntry] = []
        self.open_delays: list[float] = []
        self.released: list[int] = []  # client turn of each reply released from hold

    async def open_turn(self) -> int:
        self.counter += 1
        number = self.counter
        if self.open_delays:
            await asyncio.sleep(self.open_delays.pop(0))
        return number

    async def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def request_reply(self, turn_id: int, text: str, speech_ended_at: float) -> None:
        self.requests.append((turn_id, text))

    async def commit(self, entries: list[HistoryEntry]) -> None:
        self.history += entries

    async def release(self, reply: ReplyTrack) -> None:
        self.released.append(reply.turn_id)

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def play_reply(convo: Conversation, clock: Clock, phrases: list[str], seconds: list[float]) -> None:
    """The current reply's phrases arrive with their audio (all of it sent at once, now)."""
    reply = convo.reply
    assert reply is not None
    for seq, (text, duration) in enumerate(zip(phrases, seconds, strict=True)):
        reply.phrases[seq] = text
        for pcm in reply.assembler.add_chunk(seq, 0, bytes(int(duration * SECOND))):
            reply.sent(len(pcm), clock.now)
        reply.assembler.phrase_done(seq, 1)
    reply.assembler.reply_done(len(phrases))


async def reply_playing(convo: Conversation, clock: Clock) -> None:
    """A question was asked and its 3 s reply has been playing for half a second."""
    await ask(convo, 10, "Tell me about the moon.")
    play_reply(convo, clock, ["The moon is bright."], [3.0])
    clock.now += 0.5


async def ask(convo: Conversation, utterance: int, text: str) -> None:
    await convo.speech_started(utterance)
    await convo.transcript(utterance, text, speech_ended_at=0.0)
