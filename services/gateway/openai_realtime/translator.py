"""The native session's events, as OpenAI Realtime server events, in the order the API defines.

The native session (services/gateway/session.py) runs the turns; everything it sends passes through here on
its way to the socket, in order, on the session's one writer task. A native turn is an OpenAI response; the
user's utterance of that turn is a user item. Events the adapter builds itself travel the same way, so the
client sees one ordered stream. Internal events (`openai.*`) come from the adapter (services/gateway/
openai_realtime/session.py).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from services.gateway.openai_realtime.config import AUDIO_RATE, SessionConfig
from services.gateway.openai_realtime.items import ResponseState, UserItem, bound
from services.gateway.openai_realtime.server_events import error_event, new_id, server_event, usage_object
from services.gateway.usage import TurnUsage

USAGE_WAIT_S = 2.0
"""`response.done` carries the reply's usage, which the LLM reports right after its last phrase; a done
response waits for it at most this long."""


class Translator:
    """Turns the native session's events into OpenAI ones; keeps the ids of items and responses."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        usage_of: Callable[[int], TurnUsage | None],
        input_ms: Callable[[], int],
        rate_limits: Callable[[], list[dict[str, Any]] | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._usage_of = usage_of
        self._input_ms = input_ms
        self._rate_limits = rate_limits
        self._clock = clock
        self._users: dict[int, UserItem] = {}
        self._assistant_items: dict[str, int] = {}
        self._response: ResponseState | None = None
        self._waiting: dict[int, tuple[ResponseState, float]] = {}  # done responses waiting for their usage
        self._last_item: str | None = None
        self._latest_turn = 0
        self._audio_turn = -1

    # ---- what the adapter asks

    def item_turn(self, item_id: str) -> int | None:
        """The turn of an assistant item this session sent, if known."""
        return self._assistant_items.get(item_id)

    def overdue(self) -> bool:
        """A done response waited for its usage longer than `USAGE_WAIT_S`."""
        now = self._clock()
        return any(deadline <= now for _, deadline in self._waiting.values())

    # ---- translation

    def event(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI events for one native (or internal) event; many native events have none."""
        out = self._flush_waiting(force=False)
        handler = _HANDLERS.get(str(native.get("type")))
        if handler is not None:
            out += handler(self, native)
        return out

    def audio(self, pcm: bytes) -> list[dict[str, Any]]:
        """Reply audio of the turn announced by the last `audio.start`, as `response.output_audio.delta`."""
        response = self._response
        if response is None or response.turn_id != self._audio_turn or not pcm or response.text_only:
            return []
        out = self._message_item(response)
        delta = base64.b64encode(pcm).decode("ascii")
        return [*out, server_event("response.output_audio.delta", **self._content_ids(response), delta=delta)]

    # ---- native events

    def _session_started(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        return [server_event("session.created", session=self.config.as_dict())]

    def _session_updated(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        return [server_event("session.updated", session=self.config.as_dict())]

    def _speech_started(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        turn = int(native["turn_id"])
        item = UserItem(new_id("item"), self._input_ms())
        self._users[turn] = item
        bound(self._users)
        self._latest_turn = max(self._latest_turn, turn)
        # As the API does: the speech first (a client stops playback on it), then the response it cut.
        started = server_event(
            "input_audio_buffer.speech_started", audio_start_ms=item.started_ms, item_id=item.id
        )
        return [started, *self._cancel("turn_detected")]

    def _partial(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        item = self._users.get(int(native["turn_id"]))
        text = str(native["text"])
        if item is None or self.config.transcription is None or not text.startswith(item.partial):
            return []
        delta, item.partial = text[len(item.partial) :], text
        if not delta:
            return []
        return [self._transcription_delta(item, delta)]

    def _final(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        turn, text = int(native["turn_id"]), str(native["text"])
        item = self._users.get(turn)
        if item is None:
            item = self._users[turn] = UserItem(new_id("item"), self._input_ms())
        out = self._commit(item, text)
        if turn >= self._latest_turn:
            out += self._start(turn)  # the reply to this turn follows
        return out

    def _committed(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        """A user audio item with no response of its own (the client committed it with turn detection off,
        or turn detection does not create responses): the speech of this turn, or a new item."""
        turn, text = int(native["turn_id"]), str(native["text"])
        item = self._users.get(turn)
        if item is None or item.committed:
            item = UserItem(new_id("item"), self._input_ms(), stopped=self.config.turn_detection is None)
            self._users[turn] = item
            bound(self._users)
        return self._commit(item, text)

    def _commit(self, item: UserItem, text: str) -> list[dict[str, Any]]:
        """The events of a committed user audio item, with its transcript."""
        out: list[dict[str, Any]] = []
        item.committed = True
        if not item.stopped:
            item.stopped = True
            out.append(server_event("input_audio_buffer.speech_stopped", audio_end_ms=self._input_ms(),
                                    item_id=item.id))  # fmt: skip
        previous, self._last_item = self._last_item, item.id
        out.append(server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item.id))
        added = {"id": item.id, "type": "message", "role": "user", "object": "realtime.item",
                 "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}  # fmt: skip
        done = {**added, "content": [{"type": "input_audio", "transcript": text}]}
        out.append(server_event("conversation.item.added", previous_item_id=previous, item=added))
        out.append(server_event("conversation.item.done", previous_item_id=previous, item=done))
        if self.config.transcription is not None:
            if text.startswith(item.partial) and text != item.partial:
                out.append(self._transcription_delta(item, text[len(item.partial) :]))
            seconds = max(0.0, (self._input_ms() - item.started_ms) / 1000)
            out.append(server_event(
                "conversation.item.input_audio_transcription.completed", item_id=item.id, content_index=0,
                transcript=text, usage={"type": "duration", "seconds": round(seconds, 3)},
            ))  # fmt: skip
        return out

    def _transcription_delta(self, item: UserItem, delta: str) -> dict[str, Any]:
        return server_event(
            "conversation.item.input_audio_transcription.delta", item_id=item.id, content_index=0, delta=delta
        )

    def _reply_text(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        response, out = self._current(int(native["turn_id"]))
        if response is None:
            return []
        out += self._message_item(response)
        delta = str(native["text"]) if not response.transcript else " " + str(native["text"])
        response.transcript.append(str(native["text"]))
        kind = (
            "response.output_text.delta" if response.text_only else "response.output_audio_transcript.delta"
        )
        out.append(server_event(kind, **self._content_ids(response), delta=delta))
        return out

    def _audio_start(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        self._audio_turn = int(native["turn_id"])
        response, out = self._current(self._audio_turn)
        return out if response is None else out + self._message_item(response)

    def _audio_end(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        response = self._response
        if response is None or response.turn_id != int(native["turn_id"]):
            return []
        return self._end(response, "completed", None)

    def _error(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        out = [error_event(str(native.get("code")), str(native.get("message")))]
        response = self._response
        if response is not None and native.get("turn_id") == response.turn_id:
            details = {"type": "failed", "error": {"type": "server_error", "code": native.get("code"),
                                                   "message": native.get("message")}}  # fmt: skip
            out += self._end(response, "failed", details)
        return out

    # ---- internal events from the adapter

    def _passthrough(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        event: dict[str, Any] = native["event"]
        return [{**event, "event_id": event.get("event_id") or new_id("event")}]

    def _response_requested(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        turn = int(native["turn_id"])
        self._latest_turn = max(self._latest_turn, turn)
        if self._response is not None and self._response.turn_id == turn:
            return []
        return self._start(turn, native.get("output_modalities"))

    def _cancelled(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        return self._cancel(str(native.get("reason", "client_cancelled")))

    def _function_call(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        response, out = self._current(int(native["turn_id"]))
        if response is None:
            return []
        call_id, name, arguments = str(native["call_id"]), str(native["name"]), str(native["arguments"])
        item_id, index = new_id("item"), len(response.outputs)
        item = {"id": item_id, "type": "function_call", "object": "realtime.item", "status": "in_progress",
                "call_id": call_id, "name": name, "arguments": ""}  # fmt: skip
        response.outputs.append({**item, "status": "completed", "arguments": arguments})
        previous, self._last_item = self._last_item, item_id
        ids = {"response_id": response.id, "item_id": item_id, "output_index": index, "call_id": call_id}
        where = {"response_id": response.id, "output_index": index}
        return out + [
            server_event("response.output_item.added", **where, item=item),
            server_event("conversation.item.added", previous_item_id=previous, item=item),
            server_event("response.function_call_arguments.delta", **ids, delta=arguments),
            server_event("response.function_call_arguments.done", **ids, name=name, arguments=arguments),
            server_event("response.output_item.done", response_id=response.id, output_index=index,
                         item=response.outputs[index]),
            server_event("conversation.item.done", previous_item_id=previous, item=response.outputs[index]),
        ]  # fmt: skip

    def _usage_ready(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        waiting = self._waiting.pop(int(native["turn_id"]), None)
        return [] if waiting is None else self._done(waiting[0])

    def _tick(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # `event` has flushed what is overdue

    # ---- responses

    def _current(self, turn: int) -> tuple[ResponseState | None, list[dict[str, Any]]]:
        """The response of `turn` (None for a stale turn), started now if the turn is the newest and has
        none yet (output that comes before the adapter's `response.created`), with the events that took."""
        if self._response is not None and self._response.turn_id == turn:
            return self._response, []
        if turn >= self._latest_turn and self._response is None:
            out = self._start(turn)
            return self._response, out
        return None, []

    def _start(self, turn: int, modalities: list[str] | None = None) -> list[dict[str, Any]]:
        out = self._cancel("turn_detected")
        text_only = (modalities or self.config.output_modalities) == ["text"]
        self._response = ResponseState(turn, new_id("resp"), text_only=text_only)
        return [*out, server_event("response.created", response=self._response_object(self._response))]

    def _message_item(self, response: ResponseState) -> list[dict[str, Any]]:
        """The events that open the response's assistant message (once)."""
        if response.item_id is not None:
            return []
        response.item_id, response.message_index = new_id("item"), len(response.outputs)
        self._assistant_items[response.item_id] = response.turn_id
        bound(self._assistant_items)
        item = self._message(response, "in_progress", with_content=False)
        response.outputs.append(item)
        previous, self._last_item = self._last_item, response.item_id
        return [
            server_event("response.output_item.added", response_id=response.id,
                         output_index=response.message_index, item=item),
            server_event("conversation.item.added", previous_item_id=previous, item=item),
            server_event("response.content_part.added", **self._content_ids(response), part=response.part()),
        ]  # fmt: skip

    def _message(self, response: ResponseState, status: str, *, with_content: bool = True) -> dict[str, Any]:
        kind = {"type": "output_text", "text": response.text} if response.text_only else {
            "type": "output_audio", "transcript": response.text}  # fmt: skip
        content = [kind] if with_content else []
        return {"id": response.item_id, "type": "message", "role": "assistant", "object": "realtime.item",
                "status": status, "content": content}  # fmt: skip

    def _content_ids(self, response: ResponseState) -> dict[str, Any]:
        return {"response_id": response.id, "item_id": response.item_id,
                "output_index": response.message_index, "content_index": 0}  # fmt: skip

    def _cancel(self, reason: str) -> list[dict[str, Any]]:
        response = self._response
        if response is None:
            return []
        return self._end(response, "cancelled", {"type": "cancelled", "reason": reason})

    def _end(
        self, response: ResponseState, status: str, details: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """Close the response's message item and send `response.done` (or wait a moment for its usage)."""
        if self._response is response:
            self._response = None
        response.status, response.details = status, details
        out: list[dict[str, Any]] = []
        if response.item_id is not None:
            item_status = "completed" if status == "completed" else "incomplete"
            item = self._message(response, item_status)
            response.outputs[response.message_index] = item
            ids = self._content_ids(response)
            if status == "completed" and response.text_only:
                out.append(server_event("response.output_text.done", **ids, text=response.text))
            elif status == "completed":
                out += [
                    server_event("response.output_audio.done", **ids),
                    server_event("response.output_audio_transcript.done", **ids, transcript=response.text),
                ]
            out += [
                server_event("response.content_part.done", **ids, part=response.part()),
                server_event("response.output_item.done", response_id=response.id,
                             output_index=response.message_index, item=item),
                server_event("conversation.item.done", previous_item_id=None, item=item),
            ]  # fmt: skip
        if status == "completed" and self._usage_of(response.turn_id) is None:
            self._waiting[response.turn_id] = (response, self._clock() + USAGE_WAIT_S)
            return out
        return out + self._done(response)

    def _done(self, response: ResponseState) -> list[dict[str, Any]]:
        out = [server_event("response.done", response=self._response_object(response))]
        if (limits := self._rate_limits()) is not None:
            out.append(server_event("rate_limits.updated", rate_limits=limits))
        return out

    def _flush_waiting(self, *, force: bool) -> list[dict[str, Any]]:
        now, out = self._clock(), []
        for turn, (response, deadline) in list(self._waiting.items()):
            if force or deadline <= now:
                del self._waiting[turn]
                out += self._done(response)
        return out

    def _response_object(self, response: ResponseState) -> dict[str, Any]:
        return {
            "id": response.id,
            "object": "realtime.response",
            "status": response.status,
            "status_details": response.details,
            "output": list(response.outputs),
            "conversation_id": f"conv_{self.config.session_id[:22]}",
            "output_modalities": ["text"] if response.text_only else ["audio"],
            "max_output_tokens": self.config.max_output_tokens,
            "audio": {
                "output": {"format": {"type": "audio/pcm", "rate": AUDIO_RATE}, "voice": self.config.voice}
            },
            "usage": usage_object(self._usage_of(response.turn_id))
            if response.status != "in_progress"
            else None,
            "metadata": None,
        }


_HANDLERS: dict[str, Callable[[Translator, dict[str, Any]], list[dict[str, Any]]]] = {
    "session.started": Translator._session_started,
    "session.updated": Translator._session_updated,
    "speech.started": Translator._speech_started,
    "transcript.partial": Translator._partial,
    "transcript.final": Translator._final,
    "reply.text": Translator._reply_text,
    "audio.start": Translator._audio_start,
    "audio.end": Translator._audio_end,
    "error": Translator._error,
    "openai.event": Translator._passthrough,
    "openai.response": Translator._response_requested,
    "openai.committed": Translator._committed,
    "openai.cancel": Translator._cancelled,
    "openai.function_call": Translator._function_call,
    "openai.usage": Translator._usage_ready,
    "openai.tick": Translator._tick,
}
"""Native events not listed (`audio.clear`, `reply.truncated`, `session.usage`, `pong`) have no OpenAI
counterpart on a WebSocket: the client stops playback on `speech_started` and truncates itself."""
