"""The client side of `voxmesh bench load`: many real-time sessions from one process, each the talk client
(an open microphone sending 20 ms frames on a real-time clock, a modelled loudspeaker playing the reply).

The benchmark runs this as child processes, `python -m clients.bench.loadclient`, a JSON spec on stdin
and the results as JSON on stdout, so the clients' CPU is measured apart and can use more than one core.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clients.talk import ConversationResult, TalkError, converse_pcm
from clients.talk.player import Player
from clients.talk.turns import TraceEntry

_LAG_TICK_S = 0.01


@dataclass
class SessionSpec:
    """One session: where, when to start (seconds after the process's start), what to say."""

    url: str
    start_after_s: float


@dataclass
class ClientSpec:
    """What one client process runs."""

    sessions: list[SessionSpec]
    questions: list[str]  # paths of raw 16 kHz s16le PCM, one per question, cut at the end of speech
    turns: int  # questions asked in a row per session, each once the previous reply has played out
    timeout_s: float


@dataclass
class SessionResult:
    """What one session measured; wall-clock times so the parent can line them up with its samples."""

    url: str
    started_at: float
    ended_at: float
    first_audio_ms: list[float | None] = field(default_factory=list)  # per question
    answered: int = 0  # questions with a transcript and reply audio
    underruns: int = 0  # times reply playback ran dry mid-reply (an audible gap)
    rate_limited: int = 0  # `rate_limited` error events (at most one a second)
    error: str | None = None


def underruns(trace: list[TraceEntry], default_rate: int = 16000) -> int:
    """Reply gaps: each reply's audio, as it arrived, replayed into the talk client's player model."""
    players: dict[int, Player] = {}
    rates: dict[int, int] = {}
    for entry in trace:
        if entry.direction != "in" or entry.turn_id is None:
            continue
        turn = entry.turn_id
        if entry.type == "audio.start":
            rate = entry.data.get("sample_rate")
            rates[turn] = rate if isinstance(rate, int) else default_rate
        elif entry.type == "audio":
            player = players.get(turn)
            if player is None:
                player = players[turn] = Player(rates.get(turn, default_rate), entry.at)
            size = entry.data.get("bytes")
            player.feed(bytes(size if isinstance(size, int) else 0), entry.at)
        elif entry.type == "audio.end" and turn in players:
            players[turn].end(entry.at)
    return sum(player.underruns for player in players.values())


def summarize(result: ConversationResult, session: SessionResult) -> None:
    """Fill `session` from the talk client's result."""
    for turn in result.turns:
        session.first_audio_ms.append(turn.first_audio_ms)
        if turn.transcript and turn.first_audio_ms is not None:
            session.answered += 1
    session.underruns = underruns(result.trace)
    session.rate_limited = sum(
        1 for e in result.trace if e.type == "error" and e.data.get("code") == "rate_limited"
    )


async def run_session(spec: SessionSpec, pcms: list[bytes], timeout_s: float, origin: float) -> SessionResult:
    """Wait for the session's start, then converse; a failure is recorded, never raised."""
    await asyncio.sleep(max(0.0, origin + spec.start_after_s - time.monotonic()))
    result = SessionResult(spec.url, time.time(), 0.0)
    try:
        conversation = await converse_pcm(pcms, url=spec.url, timeout_s=timeout_s)
        summarize(conversation, result)
    except TalkError as exc:
        result.error = str(exc)
    except Exception as exc:  # a benchmark records a failed session and goes on with the others
        result.error = f"{type(exc).__name__}: {exc}"
    result.ended_at = time.time()
    return result


async def _lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late the event loop wakes up: a client that lags sends its frames late."""
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(_LAG_TICK_S)
        samples.append(max(0.0, time.monotonic() - before - _LAG_TICK_S) * 1000.0)


async def run_client(spec: ClientSpec, questions: list[bytes]) -> dict[str, object]:
    """Every session of the spec at once; the results and the loop lag (ms) of this process."""
    origin = time.monotonic()
    lags: list[float] = []
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(_lag(lags, stop))
        tasks = [
            group.create_task(
                run_session(
                    session,
                    [questions[(index + turn) % len(questions)] for turn in range(spec.turns)],
                    spec.timeout_s,
                    origin,
                )
            )
            for index, session in enumerate(spec.sessions)
        ]
        results = await asyncio.gather(*tasks)
        stop.set()
        await watcher
    lags.sort()
    return {
        "sessions": [asdict(r) for r in results],
        "loop_lag_ms": {
            "p99": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
            "max": lags[-1] if lags else 0.0,
        },
    }


def main() -> None:
    """Read a ClientSpec (JSON) from stdin, run it, print the results (JSON)."""
    raw = json.load(sys.stdin)
    spec = ClientSpec(
        sessions=[SessionSpec(**s) for s in raw["sessions"]],
        questions=list(raw["questions"]),
        turns=int(raw["turns"]),
        timeout_s=float(raw["timeout_s"]),
    )
    questions = [Path(path).read_bytes() for path in spec.questions]
    print(json.dumps(asyncio.run(run_client(spec, questions))))


if __name__ == "__main__":
    main()
