"""Prometheus metrics, one prefix, base units; no unbounded labels (never a session id)."""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_BUS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

BUS_DELIVERY_SECONDS = Histogram(
    "voxmesh_bus_delivery_seconds",
    "Time from send to receipt of a bus message.",
    ["stream"],
    buckets=_BUS_BUCKETS,
)
MESSAGES_DROPPED = Counter("voxmesh_messages_dropped_total", "Bus messages dropped, by reason.", ["reason"])
JOBS_ABORTED = Counter(
    "voxmesh_jobs_aborted_total",
    "Running or admitted work items stopped because their turn was cancelled, by work queue.",
    ["queue"],
)
CANCEL_STOP_SECONDS = Histogram(
    "voxmesh_cancel_stop_seconds",
    "Cancel broadcast sent to the aborted work item having stopped (model idle, slot free), by work queue.",
    ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)
ENTRIES_TAKEN_OVER = Counter(
    "voxmesh_entries_taken_over_total",
    "Work-queue entries taken over from a consumer presumed dead (idle past CLAIM_IDLE_MS), by work queue.",
    ["queue"],
)
HANDLER_ERRORS = Counter(
    "voxmesh_handler_errors_total", "Work items whose handler failed, by work queue.", ["queue"]
)

ASR_FINAL_SECONDS = Histogram(
    "voxmesh_asr_final_latency_seconds",
    "End of user speech to final transcript sent.",
    buckets=_LATENCY_BUCKETS,
)
ASR_ENDPOINT_SECONDS = Histogram(
    "voxmesh_asr_endpoint_seconds",
    "End of user speech to the end of the utterance being decided, in audio time (the silence waited for).",
    buckets=_LATENCY_BUCKETS,
)
ASR_SPECULATIVE_FINALS = Counter(
    "voxmesh_asr_speculative_finals_total",
    "Utterances transcribed during the end-of-speech silence, by outcome: used as the final, or discarded "
    "because the speaker went on.",
    ["outcome"],
)
ASR_TURN_VERDICTS = Counter(
    "voxmesh_asr_turn_verdicts_total",
    "End-of-turn judgements at a pause, by verdict: complete (the turn ends now) or incomplete (keep "
    "listening for the longer silence).",
    ["verdict"],
)
ASR_TURN_MISHEARD = Counter(
    "voxmesh_asr_turn_misheard_total",
    "Pauses kept open only because the recognizer nearly heard an unfinished ending (the words it wrote "
    "read finished; TurnPolicyConfig.misheard_ending).",
)
SPECULATIVE_REPLIES = Counter(
    "voxmesh_speculative_replies_total",
    "Replies started on a speculative transcript before the end of the turn was confirmed, by outcome: "
    "started, used (the final confirmed the text; the held audio was released), discarded.",
    ["outcome"],
)
ASR_PARTIALS = Counter("voxmesh_asr_partials_total", "Partial transcripts sent while users were speaking.")
ASR_PARTIALS_PER_UTTERANCE = Histogram(
    "voxmesh_asr_partials_per_utterance",
    "Partial transcripts sent for one utterance before its end.",
    buckets=(0, 1, 2, 3, 5, 8, 13, 21),
)
ASR_SESSIONS = Gauge("voxmesh_asr_sessions_owned", "Sessions whose audio this ASR replica owns.")
LLM_FIRST_TOKEN_SECONDS = Histogram(
    "voxmesh_llm_first_token_seconds",
    "Reply request received to first generated text.",
    buckets=_LATENCY_BUCKETS,
)
LLM_FIRST_PHRASE_SECONDS = Histogram(
    "voxmesh_llm_first_phrase_seconds",
    "Reply request received to first phrase sent to TTS.",
    buckets=_LATENCY_BUCKETS,
)
LLM_YIELD_SECONDS = Histogram(
    "voxmesh_llm_yield_seconds",
    "First phrase sent to its first audio out: how long generation paused so synthesis had the CPU.",
    buckets=_LATENCY_BUCKETS,
)
TOOL_CALLS = Counter(
    "voxmesh_tool_calls_total",
    "Tool (connector) calls the model made, by tool and outcome (ok, bad_arguments, timeout, error).",
    ["tool", "outcome"],
)
TOOL_CALL_SECONDS = Histogram(
    "voxmesh_tool_call_seconds", "Time one tool call took, failures included, by tool.", ["tool"],
    buckets=_LATENCY_BUCKETS,
)  # fmt: skip
TTS_FIRST_BYTE_SECONDS = Histogram(
    "voxmesh_tts_first_byte_seconds",
    "Phrase received to its first audio chunk sent.",
    buckets=_LATENCY_BUCKETS,
)
TURN_FIRST_AUDIO_SECONDS = Histogram(
    "voxmesh_turn_first_audio_seconds",
    "End of user speech to first reply audio sent to the client.",
    buckets=_LATENCY_BUCKETS,
)
GATEWAY_SESSIONS = Gauge("voxmesh_gateway_sessions_active", "Open WebSocket sessions on this gateway.")
GATEWAY_CLIENT_ERRORS = Counter(
    "voxmesh_gateway_client_errors_total", "Client messages rejected, by reason.", ["reason"]
)
LLM_TOKENS_PER_SECOND = Histogram(
    "voxmesh_llm_tokens_per_second",
    "Output tokens per second of one reply, first text to end of generation, by engine.",
    ["engine"],
    buckets=(1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 400),
)
LLM_PHRASES_PER_REPLY = Histogram(
    "voxmesh_llm_phrases_per_reply",
    "Phrases sent to TTS for one reply, by economy mode (true/false).",
    ["economy"],
    buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24),
)
LLM_PREFILL_TOKENS = Counter(
    "voxmesh_llm_prefill_tokens_total",
    "Prompt tokens a local model read ahead of their request, from the gateway's hints while users spoke.",
)
LLM_ENGINE_TOKENS = Counter(
    "voxmesh_llm_engine_tokens_total",
    "Tokens the engines processed (kind: input or output), every generation included, speculative replies "
    "that were discarded too: the cost side. Compare voxmesh_llm_tokens_total (delivered replies only).",
    ["engine", "model", "kind"],
)
USAGE_LLM_TOKENS = Counter(
    "voxmesh_llm_tokens_total",
    "LLM tokens (kind: input or output) of replies released to clients, as counted into session usage; "
    "estimated where the engine gave no figures.",
    ["engine", "model", "kind"],
)
USAGE_TOOL_CALLS = Counter(
    "voxmesh_usage_tool_calls_total",
    "Tool calls made by replies released to clients, as counted into session usage.",
    ["engine", "model"],
)
USAGE_AUDIO_SECONDS = Counter(
    "voxmesh_audio_seconds_total",
    "Audio of sessions: direction in (microphone audio received) or out (reply audio sent).",
    ["direction"],
)
USAGE_BUDGET_REACHED = Counter(
    "voxmesh_session_budget_reached_total",
    "Sessions that reached their token budget, by the action taken (economy, refuse).",
    ["action"],
)
