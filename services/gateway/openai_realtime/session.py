"""A realtime session that speaks OpenAI's Realtime protocol to its client.

It is the native session (turns, barge-in, speculative replies, heard-only history, usage, limits) with
different ends: client events are read here, and everything the session sends is translated on its way out
(translator.py). Microphone audio comes as base64 PCM at 24 kHz and is resampled to the ASR's 16 kHz;
replies are made at 24 kHz by the TTS and go out as base64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from starlette.websockets import WebSocket

from services.gateway.inbound import InboundWriter
from services.gateway.openai_realtime.client_events import (
    AudioAppend,
    AudioClear,
    AudioCommit,
    ClientEvent,
    FunctionCallItem,
    FunctionOutputItem,
    FunctionTool,
    ItemCreate,
    ItemTruncate,
    MessageItem,
    ProtocolError,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    parse_client_event,
)
from services.gateway.openai_realtime.config import AUDIO_RATE, SessionConfig
from services.gateway.openai_realtime.items import audio_ms
from services.gateway.openai_realtime.server_events import error_event, new_id, server_event
from services.gateway.openai_realtime.translator import Translator
from services.gateway.openai_realtime.user_input import UserInput
from services.gateway.openai_realtime.wire import OpenAIWire
from services.gateway.playback import ReplyTrack
from services.gateway.session import GatewaySession
from services.gateway.settings import GatewaySettings
from shared import keys
from shared.audio import ASR_SAMPLE_RATE, StreamResampler
from shared.bus import Bus
from shared.history import HistoryEntry
from shared.metrics import GATEWAY_CLIENT_ERRORS
from shared.schema import ClientTool, FunctionCall, Message, ReplyRequested, ReplyUsage


@dataclass(frozen=True, slots=True)
class _ReplyPlan:
    """What the next reply request carries besides the words (a `response.create` may override them)."""

    tools: list[FunctionTool]
    instructions: str


class OpenAIRealtimeSession(GatewaySession):
    """The native session behind OpenAI's Realtime protocol (docs/openai-realtime.md)."""

    def __init__(
        self, websocket: WebSocket, bus: Bus, settings: GatewaySettings, model: str,
        *, inbound_writer: InboundWriter | None = None,
    ) -> None:  # fmt: skip
        self._beta = "realtime=v1" in websocket.headers.get("openai-beta", "")
        wire = OpenAIWire(websocket)
        super().__init__(cast(WebSocket, wire), bus, settings, AUDIO_RATE, inbound_writer=inbound_writer)
        self.config = SessionConfig(session_id=self.session_id, model=model)
        self.translator = Translator(
            self.config, usage_of=self.usage.turns.get, input_ms=lambda: audio_ms(self._input_bytes),
            rate_limits=self._rate_limits,
        )  # fmt: skip
        wire.translator = self.translator
        self._wire = wire
        self._resampler = StreamResampler(AUDIO_RATE, ASR_SAMPLE_RATE)
        self._input_bytes = 0
        self.unanswered: list[str] = []
        """Words not answered yet (text items, committed speech): the next `response.create` answers them."""
        self._pending_history: list[HistoryEntry] = []
        """Items for the history before the next reply (function calls and outputs, assistant text)."""
        self._next_reply: _ReplyPlan | None = None
        self._calls_sent: dict[str, None] = {}
        """Function calls already given to the client, by call id (a retried reply sends them again)."""
        self.input = UserInput(self)

    async def run(self) -> None:
        """Serve the session; a client of the beta protocol is told so and closed before anything starts."""
        if self._beta:
            message = "voxmesh speaks the GA Realtime protocol, not the beta (OpenAI-Beta: realtime=v1)."
            await self._wire.send_json(
                {"type": "openai.event", "event": error_event("unsupported_protocol", message)}
            )
            await self._wire.close(code=1008, reason="beta realtime protocol not supported")
            return
        await super().run()

    # ---- client events

    async def _on_text(self, text: str) -> bool:
        try:
            event = parse_client_event(text)
        except ProtocolError as exc:
            if self._text_bucket.take(1):
                await self._refuse(exc)
            else:
                await self._rate_limited("text events arrive faster than allowed")
            return True
        if isinstance(event, AudioAppend) and event.audio:
            await self._append(event.audio)  # audio: limited as audio, not as text events
            return True
        if not self._text_bucket.take(1):
            await self._rate_limited("text events arrive faster than allowed")
            return True
        try:
            await self._handle(event)
        except ProtocolError as exc:
            exc.event_id = exc.event_id or event.event_id
            await self._refuse(exc)
        return True

    async def _handle(self, event: ClientEvent) -> None:
        if isinstance(event, SessionUpdate):
            self.config.apply(event)
            self.instructions = self.config.instructions
            await self.input.configure()
            await self._emit(server_event("session.updated", session=self.config.as_dict()))
        elif isinstance(event, AudioAppend):
            pass  # an empty append
        elif isinstance(event, AudioCommit):
            await self.input.commit()
        elif isinstance(event, AudioClear):
            await self.input.clear()
            await self._emit(server_event("input_audio_buffer.cleared"))
        elif isinstance(event, ItemCreate):
            await self._add_item(event)
        elif isinstance(event, ItemTruncate):
            await self._truncate(event)
        elif isinstance(event, ResponseCreate):
            if not self.input.defer(event):  # after a commit: answered once its words are known
                await self._respond(event)
        elif isinstance(event, ResponseCancel):
            if not self.replying:
                raise ProtocolError("response_cancel_not_active", "There is no active response to cancel.")
            await self.conversation.client_cancel()
            await self.send({"type": "openai.cancel", "reason": "client_cancelled"})
        else:
            raise ProtocolError(
                "unsupported_event", f"voxmesh does not support {event.type} (docs/openai-realtime.md).",
                param="type",
            )  # fmt: skip

    async def _append(self, pcm24: bytes) -> None:
        self._input_bytes += len(pcm24)
        self.input.appended(len(pcm24))
        pcm = self._resampler.process(pcm24)
        limit = self.settings.max_frame_bytes
        for start in range(0, len(pcm), limit):
            await self._on_audio(pcm[start : start + limit])

    async def _on_bus(self, message: Message) -> None:
        await self.input.relay(message, super()._on_bus)

    async def respond_now(self, event: ResponseCreate) -> None:
        """Answer a `response.create` that waited for a commit's words (an error if it cannot be)."""
        try:
            await self._respond(event)
        except ProtocolError as exc:
            exc.event_id = exc.event_id or event.event_id
            await self._refuse(exc)

    async def _add_item(self, event: ItemCreate) -> None:
        item, turn = event.item, self.turn
        item_id = item.id or new_id("item")
        full: dict[str, Any] = {"id": item_id, "object": "realtime.item", "status": "completed"}
        if isinstance(item, MessageItem):
            if item.role == "system":
                raise ProtocolError("unsupported_item", "Use session.update instructions for system text.",
                                    param="item.role")  # fmt: skip
            if any(part.type in ("input_audio", "input_image") for part in item.content):
                message = "Send audio with input_audio_buffer.append; items carry text only."
                raise ProtocolError("unsupported_item", message, param="item.content")
            text = item.text()
            kind = "input_text" if item.role == "user" else "output_text"
            full |= {"type": "message", "role": item.role, "content": [{"type": kind, "text": text}]}
            if item.role == "user":
                self.unanswered.append(text)
            else:
                self._pending_history.append(HistoryEntry(role="assistant", text=text, turn_id=turn))
        elif isinstance(item, FunctionCallItem):
            full |= {"type": "function_call", "call_id": item.call_id, "name": item.name,
                     "arguments": item.arguments}  # fmt: skip
            self._pending_history.append(HistoryEntry(
                role="function_call", text=item.arguments, turn_id=turn, call_id=item.call_id, name=item.name
            ))  # fmt: skip
        elif isinstance(item, FunctionOutputItem):
            full |= {"type": "function_call_output", "call_id": item.call_id, "output": item.output}
            self._pending_history.append(HistoryEntry(
                role="function_call_output", text=item.output, turn_id=turn, call_id=item.call_id
            ))  # fmt: skip
        previous = event.previous_item_id
        await self._emit(server_event("conversation.item.added", previous_item_id=previous, item=full))
        await self._emit(server_event("conversation.item.done", previous_item_id=previous, item=full))

    async def _truncate(self, event: ItemTruncate) -> None:
        turn = self.translator.item_turn(event.item_id)
        if turn is None:
            raise ProtocolError("invalid_value", f"No assistant item with id {event.item_id[:64]!r}.",
                                param="item_id")  # fmt: skip
        if event.content_index != 0:
            raise ProtocolError(
                "invalid_value", "Assistant items have one audio part.", param="content_index"
            )
        await self.conversation.audio_played(turn, float(event.audio_end_ms))
        await self._emit(server_event(
            "conversation.item.truncated", item_id=event.item_id, content_index=0,
            audio_end_ms=event.audio_end_ms,
        ))  # fmt: skip

    async def _respond(self, event: ResponseCreate) -> None:
        options = event.response
        if self.replying:
            raise ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress.",
            )
        if options.conversation not in (None, "auto") or options.input is not None:
            raise ProtocolError("unsupported_value", "voxmesh answers in the conversation only.",
                                param="response.conversation")  # fmt: skip
        instructions = self.config.instructions if options.instructions is None else options.instructions
        self._next_reply = _ReplyPlan(
            self.config.offered_tools(options.tools, options.tool_choice), instructions
        )
        text, self.unanswered = " ".join(self.unanswered), []
        await self.conversation.typed(text, time.time())
        await self.send(
            {"type": "openai.response", "turn_id": self.turn, "output_modalities": options.output_modalities}
        )

    async def _refuse(self, error: ProtocolError) -> None:
        GATEWAY_CLIENT_ERRORS.labels(reason=f"openai_{error.code}"[:48]).inc()
        await self._emit(error_event(error.code, error.message, param=error.param, event_id=error.event_id))

    async def _emit(self, event: dict[str, Any]) -> None:
        """Send an OpenAI event the session built itself, in order with the translated ones."""
        await self.send({"type": "openai.event", "event": event})

    # ---- the native session's hooks

    async def request_reply(self, work_id: int, text: str, speech_ended_at: float) -> None:
        """As the native session, with the client's tools and instructions, after writing the items the
        client added (and the function calls the model made) to the history."""
        plan = self._next_reply or _ReplyPlan(self.config.offered_tools(), self.config.instructions)
        self._next_reply = None
        history = self._pending_history + [
            HistoryEntry(role="user", text=pending, turn_id=self.turn) for pending in self.unanswered
        ]
        self._pending_history, self.unanswered = [], []
        await self.commit(history)
        self._speech_ended_at = {work_id: speech_ended_at}
        if self.usage.budget_reached and self.settings.budget_action == "refuse":
            await self._refuse_reply(work_id)
            return
        tools = [
            ClientTool(name=t.name, description=t.description, parameters=t.parameters) for t in plan.tools
        ]
        request = ReplyRequested(
            session_id=self.session_id, turn_id=work_id, seq=0, text=text,
            output_sample_rate=self.conversation.sample_rate, speech_ended_at=speech_ended_at,
            instructions=plan.instructions, economy=self.economy, tools=tools,
        )  # fmt: skip
        await self.bus.send(keys.LLM_REQUESTS, request)

    async def _deliver(self, reply: ReplyTrack, message: Message) -> None:
        if isinstance(message, FunctionCall):
            if message.call_id in self._calls_sent:
                return
            self._calls_sent[message.call_id] = None
            while len(self._calls_sent) > 64:
                del self._calls_sent[next(iter(self._calls_sent))]
            self._pending_history.append(HistoryEntry(
                role="function_call", text=message.arguments, turn_id=reply.turn_id, call_id=message.call_id,
                name=message.name,
            ))  # fmt: skip
            await self.send(
                {
                    "type": "openai.function_call",
                    "turn_id": reply.turn_id,
                    "call_id": message.call_id,
                    "name": message.name,
                    "arguments": message.arguments,
                }
            )
            return  # fmt: skip
        await super()._deliver(reply, message)

    async def _charge(self, turn_id: int, report: ReplyUsage) -> None:
        await super()._charge(turn_id, report)
        await self.send({"type": "openai.usage", "turn_id": turn_id})  # a done response may wait for it

    async def _give_up_stalled_reply(self) -> None:
        await super()._give_up_stalled_reply()
        if self.translator.overdue():
            await self.send({"type": "openai.tick"})

    def _rate_limits(self) -> list[dict[str, Any]] | None:
        budget = self.usage.token_budget
        if budget is None:
            return None
        remaining = max(0, budget - self.usage.tokens)
        return [{"name": "tokens", "limit": budget, "remaining": remaining, "reset_seconds": 0.0}]
