"""Driving voxmesh with the unmodified `openai` SDK: every event it sends is parsed strictly with the SDK's
own models (an unknown event, a missing or mistyped field, or a field the models do not know fails the
test), and a microphone that streams 24 kHz PCM in real time, silence between what it is told to say."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

from tests.speech import silence, synthesize_speech

RATE = 24_000
CHUNK_MS = 40
_ADAPTER: TypeAdapter[RealtimeServerEvent] = TypeAdapter(RealtimeServerEvent)


def strict_event(raw: bytes | str) -> RealtimeServerEvent:
    """Parse one server event with the SDK's models, validating (the SDK itself only constructs) and
    refusing fields its models do not declare."""
    event = _ADAPTER.validate_json(raw)
    _no_unknown_fields(event, event.type)
    return event


def _no_unknown_fields(value: object, where: str) -> None:
    if isinstance(value, BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"{where}: fields the SDK does not know: {sorted(extra)}"
        for name in type(value).model_fields:
            _no_unknown_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_unknown_fields(item, f"{where}[{index}]")


class Client:
    """One SDK connection: a reader that parses every event strictly, and a real-time microphone."""

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self.connection = connection
        self.events: list[RealtimeServerEvent] = []
        self._arrived = asyncio.Condition()
        self._speech: asyncio.Queue[bytes] = asyncio.Queue()
        self.mic_idle = asyncio.Event()

    async def read(self) -> None:
        """Collect events until the connection closes."""
        while True:
            try:
                raw = await self.connection.recv_bytes()
            except Exception:
                return  # closed
            event = strict_event(raw)
            async with self._arrived:
                self.events.append(event)
                self._arrived.notify_all()

    async def microphone(self) -> None:
        """Send 40 ms chunks paced by a monotonic clock: queued speech, else silence."""
        start, sent = time.monotonic(), 0
        pending = b""
        chunk_bytes = RATE * 2 * CHUNK_MS // 1000
        while True:
            if not pending and not self._speech.empty():
                pending = self._speech.get_nowait()
                self.mic_idle.clear()
            if pending:
                chunk, pending = pending[:chunk_bytes], pending[chunk_bytes:]
                if not pending and self._speech.empty():
                    self.mic_idle.set()
            else:
                chunk = silence(CHUNK_MS, RATE)
            await self.connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * CHUNK_MS / 1000 - time.monotonic()))

    def say(self, text: str) -> None:
        """Speak `text` (the bundled piper voice) into the microphone, after what is queued."""
        self.mic_idle.clear()
        self._speech.put_nowait(synthesize_speech(text, RATE))

    def pause(self, duration_ms: int) -> None:
        """Silence of `duration_ms` after what is queued (`mic_idle` waits for it too)."""
        self.mic_idle.clear()
        self._speech.put_nowait(silence(duration_ms, RATE))

    async def wait_for(
        self, predicate: Callable[[RealtimeServerEvent], bool], *, after: int = 0, timeout_s: float = 90
    ) -> tuple[int, Any]:
        """The first event at index >= `after` that matches, and its index."""
        async with asyncio.timeout(timeout_s), self._arrived:
            while True:
                for index in range(after, len(self.events)):
                    if predicate(self.events[index]):
                        return index, self.events[index]
                await self._arrived.wait()

    async def wait_type(self, type_: str, *, after: int = 0, timeout_s: float = 90) -> tuple[int, Any]:
        """The first event of `type_` at index >= `after`."""
        return await self.wait_for(lambda event: event.type == type_, after=after, timeout_s=timeout_s)

    def of_type(self, type_: str, after: int = 0, before: int | None = None) -> list[Any]:
        """The events of `type_` received so far in [after, before)."""
        return [event for event in self.events[after:before] if event.type == type_]

    def index(self, type_: str, after: int = 0) -> int:
        """The index of the first event of `type_` at or after `after` (-1: none)."""
        return next((i for i in range(after, len(self.events)) if self.events[i].type == type_), -1)

    async def send(self, event: dict[str, Any]) -> None:
        """Send a client event as JSON (also malformed ones: the SDK's `send_raw` sends any text)."""
        import json

        await self.connection.send_raw(json.dumps(event))


@asynccontextmanager
async def connected(port: int, *, api_key: str = "voxmesh", mic: bool = True) -> AsyncIterator[Client]:
    """An SDK connection to voxmesh at `ws://127.0.0.1:PORT/v1/realtime?model=...`, read and (with `mic`)
    fed from a real-time microphone while the block runs."""
    sdk = AsyncOpenAI(api_key=api_key, websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    async with sdk.realtime.connect(model="gpt-realtime") as connection:
        client = Client(connection)
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(client.read())
            microphone = group.create_task(client.microphone()) if mic else None
            try:
                yield client
            finally:
                if microphone is not None:
                    microphone.cancel()
                reader.cancel()
    await sdk.close()


def audio_bytes(client: Client, response_id: str) -> int:
    """Bytes of reply audio (decoded PCM) received for a response."""
    return sum(
        len(base64.b64decode(event.delta))
        for event in client.of_type("response.output_audio.delta")
        if event.response_id == response_id
    )
