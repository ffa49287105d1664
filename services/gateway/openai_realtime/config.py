"""One OpenAI-protocol session's configuration: what `session.update` may change, and how it is reported in
`session.created` / `session.updated` (the shape of the SDK's `RealtimeSessionCreateRequest`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.gateway.openai_realtime.client_events import (
    AudioFormat,
    FunctionTool,
    ProtocolError,
    SessionUpdate,
    TurnDetection,
)

AUDIO_RATE = 24_000
"""OpenAI's `audio/pcm`: 24 kHz s16le mono, both ways."""
_PCM = {"type": "audio/pcm", "rate": AUDIO_RATE}


def check_format(audio_format: AudioFormat | None, param: str) -> None:
    """Only `audio/pcm` at 24 kHz: refuse anything else with an error naming the field."""
    if audio_format is None:
        return
    if audio_format.type != "audio/pcm":
        raise ProtocolError(
            "unsupported_audio_format", f"voxmesh speaks audio/pcm at 24 kHz only, not {audio_format.type}.",
            param=param,
        )  # fmt: skip
    if audio_format.rate not in (None, AUDIO_RATE):
        raise ProtocolError("invalid_value", "audio/pcm is 24000 Hz.", param=f"{param}.rate")


@dataclass
class SessionConfig:
    """The session as the client configured it (defaults: audio out, semantic VAD, transcription on)."""

    session_id: str
    model: str
    instructions: str = ""
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: {
            "type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True
        }
    )  # fmt: skip
    """Until the client sets it: voxmesh's own turn taking (the turn model judges the words, the ASR's
    silences bound it), which is what semantic VAD means. None: off (push-to-talk)."""
    transcription: dict[str, Any] | None = field(default_factory=lambda: {"model": "whisper"})
    voice: str | dict[str, Any] = "voxmesh"
    tools: list[FunctionTool] = field(default_factory=list)
    tool_choice: str = "auto"
    max_output_tokens: int | str = "inf"

    def apply(self, update: SessionUpdate) -> None:
        """Apply a `session.update` all or nothing; raises ProtocolError for what voxmesh cannot honour."""
        session, raw = update.session, update.raw
        audio = session.audio
        raw_input = (raw.get("audio") or {}).get("input") or {}
        turn_detection = self.turn_detection
        transcription = self.transcription
        if audio is not None and audio.input is not None:
            check_format(audio.input.format, "session.audio.input.format")
            if "turn_detection" in raw_input:
                turn_detection = _turn_detection(audio.input.turn_detection)
            if "transcription" in raw_input:
                given = audio.input.transcription
                transcription = None if given is None else given.model_dump(exclude_none=True)
        if audio is not None and audio.output is not None:
            check_format(audio.output.format, "session.audio.output.format")
        # Checked in full above: from here on nothing fails, so an update applies entirely or not at all.
        self.turn_detection, self.transcription = turn_detection, transcription
        if session.output_modalities is not None:
            self.output_modalities = list(session.output_modalities)
        if session.instructions is not None:
            self.instructions = session.instructions
        if audio is not None and audio.output is not None and audio.output.voice is not None:
            voice = audio.output.voice
            self.voice = voice if isinstance(voice, str) else voice.model_dump()
        if session.tools is not None:
            self.tools = list(session.tools)
        if session.tool_choice is not None:
            self.tool_choice = session.tool_choice
        if session.max_output_tokens is not None:
            self.max_output_tokens = session.max_output_tokens

    @property
    def auto_response(self) -> bool:
        """A turn the server detects is answered at once (turn detection on, `create_response` not false)."""
        return self.turn_detection is not None and bool(self.turn_detection.get("create_response", True))

    def asr_options(self) -> tuple[bool, int | None]:
        """What the ASR is told (`AsrOptions`): turn detection on, and the longest silence that ends an
        utterance (server VAD's `silence_duration_ms`; None: the ASR's own settings)."""
        detection = self.turn_detection
        if detection is None:
            return False, None
        silence = detection.get("silence_duration_ms") if detection["type"] == "server_vad" else None
        return True, silence

    def offered_tools(
        self, override: list[FunctionTool] | None = None, choice: str | None = None
    ) -> list[FunctionTool]:
        """The tools a response may call (none when the tool choice is `none`)."""
        if (choice or self.tool_choice) == "none":
            return []
        return list(self.tools if override is None else override)

    def as_dict(self) -> dict[str, Any]:
        """The session as `session.created` / `session.updated` report it."""
        return {
            "type": "realtime",
            "model": self.model,
            "instructions": self.instructions,
            "output_modalities": list(self.output_modalities),
            "audio": {
                "input": {
                    "format": dict(_PCM),
                    "transcription": self.transcription,
                    "noise_reduction": None,
                    "turn_detection": self.turn_detection,
                },
                "output": {"format": dict(_PCM), "voice": self.voice, "speed": 1.0},
            },  # fmt: skip
            "tools": [tool.model_dump() for tool in self.tools],
            "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens,
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
        }


def _turn_detection(given: TurnDetection | None) -> dict[str, Any] | None:
    """Turn detection as voxmesh runs it: off (push-to-talk), or on and always interruptible."""
    if given is None:
        return None
    if given.interrupt_response is False:
        raise ProtocolError(
            "unsupported_turn_detection", "voxmesh always lets speech interrupt a response.",
            param="session.audio.input.turn_detection.interrupt_response",
        )  # fmt: skip
    create = given.create_response is not False
    if given.type == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": given.eagerness or "auto", "create_response": create,
                "interrupt_response": True}  # fmt: skip
    return {
        "type": "server_vad", "threshold": given.threshold if given.threshold is not None else 0.5,
        "prefix_padding_ms": given.prefix_padding_ms if given.prefix_padding_ms is not None else 300,
        "silence_duration_ms": given.silence_duration_ms if given.silence_duration_ms is not None else 500,
        "create_response": create, "interrupt_response": True, "idle_timeout_ms": None,
    }  # fmt: skip
