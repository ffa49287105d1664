"""Every Redis key, stream, group and channel name in one place.

Per-session keys carry the session id in a hash tag ``{...}`` so that, on Redis Cluster, all of one
session's streams live in one slot.
"""

PREFIX = "vm"

# Shared work queues, each consumed by one consumer group: the things to scale replicas on.
ASR_DISPATCH = f"{PREFIX}:asr:sessions"
LLM_REQUESTS = f"{PREFIX}:llm:requests"
TTS_REQUESTS = f"{PREFIX}:tts:requests"
DEAD_LETTERS = f"{PREFIX}:dead"

ASR_GROUP = "asr"
LLM_GROUP = "llm"
TTS_GROUP = "tts"

# Broadcast: every replica of every service subscribes.
CANCEL_CHANNEL = f"{PREFIX}:cancel"
# Best-effort hints to every LLM replica: the words a user has said so far (schema.ReplyPrefill).
LLM_PREFILL_CHANNEL = f"{PREFIX}:llm:prefill"


def audio_in(session_id: str) -> str:
    """The user's audio for one session, read in order by the ASR worker that owns the session."""
    return f"{PREFIX}:audio:{{{session_id}}}"


def session_out(session_id: str) -> str:
    """Events and reply audio for one session, read by the gateway holding its WebSocket."""
    return f"{PREFIX}:out:{{{session_id}}}"


def turn_counter(session_id: str) -> str:
    """The session's current turn number (INCR by the gateway): the durable cancel fence."""
    return f"{PREFIX}:turn:{{{session_id}}}"


def history(session_id: str) -> str:
    """The conversation so far (a capped list of JSON chat messages) for whichever LLM replica answers."""
    return f"{PREFIX}:history:{{{session_id}}}"


def asr_checkpoint(session_id: str) -> str:
    """Last audio entry id the ASR owner fully handled: where a new owner resumes after failover."""
    return f"{PREFIX}:asr:ckpt:{{{session_id}}}"


def asr_utterance(session_id: str) -> str:
    """The newest utterance the ASR owner announced (its id): a new owner re-detecting the same speech from
    the checkpoint, a frame earlier or later, goes on under that id rather than one the gateway never saw."""
    return f"{PREFIX}:asr:utt:{{{session_id}}}"


def reply_said(session_id: str) -> str:
    """The phrases of the session's replies already sent out (a list, each item tagged with its request),
    so a replica that takes a reply over goes on after them instead of saying it anew."""
    return f"{PREFIX}:llm:said:{{{session_id}}}"


def asr_options(session_id: str) -> str:
    """The session's latest `AsrOptions` (JSON), kept by its ASR owner for a replica that takes over."""
    return f"{PREFIX}:asr:options:{{{session_id}}}"


def usage(session_id: str) -> str:
    """The session's usage totals (a hash: tokens, tool calls, audio seconds), written by the gateway."""
    return f"{PREFIX}:usage:{{{session_id}}}"


def usage_turns(session_id: str) -> str:
    """The session's usage per turn (a hash: turn number → JSON), written by the gateway."""
    return f"{PREFIX}:usage:turns:{{{session_id}}}"


def session_record(session_id: str) -> str:
    """Who may resume the session (a hash: the resume key's digest, the token's subject) and, while its
    client is away, what a resumed connection carries on from (written by the gateway)."""
    return f"{PREFIX}:session:{{{session_id}}}"


def session_keys(session_id: str) -> list[str]:
    """Every per-session key, for expiry when the session ends."""
    return [
        audio_in(session_id),
        session_out(session_id),
        turn_counter(session_id),
        history(session_id),
        asr_checkpoint(session_id),
        asr_utterance(session_id),
        asr_options(session_id),
        reply_said(session_id),
        usage(session_id),
        usage_turns(session_id),
        session_record(session_id),
    ]
