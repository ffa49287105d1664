"""What one benchmark turn measured: its stages in milliseconds, what was flagged, and whether it failed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Mode = Literal["mesh", "in-process", "mesh-busy", "mesh-webrtc"]


@dataclass(frozen=True)
class Stage:
    """One measured stage: its key in the results, how it reads in the table, and where it comes from."""

    key: str
    label: str
    source: str  # the metric (mesh) or the measurement (in-process), for the table


# In table order. A mode leaves out the stages it cannot measure.
STAGES = (
    Stage("endpoint", "end of speech → end of turn detected", "`voxmesh_asr_endpoint_seconds` / silence fed"),
    Stage(
        "whisper_stock",
        "Whisper on the utterance, stock 30 s window",
        "– / `FasterWhisperRecognizer.transcribe`",
    ),
    Stage("whisper", "Whisper on the utterance, window sized to it", "– / the same, `short_window`"),
    Stage(
        "asr_final",
        "end of speech → final transcript",
        "`voxmesh_asr_final_latency_seconds` / silence + stock",
    ),
    Stage("final_after_endpoint", "end of turn detected → final transcript", "difference of the two above"),
    Stage("llm_first_token", "request → first LLM token", "`voxmesh_llm_first_token_seconds`"),
    Stage("llm_first_phrase", "request → first phrase", "`voxmesh_llm_first_phrase_seconds`"),
    Stage("tts_first_byte", "phrase → first TTS byte", "`voxmesh_tts_first_byte_seconds`"),
    Stage("gateway_first_audio", "end of speech → first audio sent", "`voxmesh_turn_first_audio_seconds`"),
    Stage(
        "first_audio",
        "**end of speech → first audio at the client**",
        "talk client / silence + stock Whisper + first phrase + first TTS byte",
    ),
    Stage(
        "first_audio_short_window", "… in-process with the sized window", "– / the same with the sized window"
    ),
)
STAGE_KEYS = tuple(stage.key for stage in STAGES)


@dataclass
class TurnResult:
    """One question asked one way; `stages_ms` holds what was measured, `error` says why it failed."""

    index: int
    question: str
    mode: Mode
    stages_ms: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # values that are not this turn's alone, and why
    counts: dict[str, int] = field(default_factory=dict)  # counters that rose during the turn (mesh)
    transcript: str = ""
    reply_text: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The turn got its reply (mesh: audio at the client; in-process: a first TTS chunk)."""
        return self.error is None

    def to_json(self) -> dict[str, object]:
        """Every field, for `--json`."""
        return asdict(self)
