"""SIGKILL the ASR, LLM or TTS replica that holds a turn, mid-turn, with a second replica running: the turn
completes within a few seconds, the transcript comes once, the reply's audio is complete and in order,
and the reply text the client sees is what its audio says.

Real processes on a real Redis: the gateway, two replicas of the service under test, the other services
once. The LLM answers through the real google-genai SDK from a fake Gemini that answers a fresh request
differently each time (as a sampling model does) and continues a prefilled answer (as Gemini 2.5 does).
The TTS is the service's real loop with the benchmark's fake synthesizer, whose audio says which chunk
of how long a phrase it is, so the client's audio can be checked byte for byte against the reply text.
The ASR under test is the real one (Whisper tiny.en); elsewhere the ASR is stood in for.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from clients.bench.fakes import FakeSettings, fake_speech
from services.llm.economy import PhraseStats, ReplyPlan, ends_sentence, reply_phrases
from services.llm.engine import ChatMessage, GenerationOptions, Usage
from services.llm.factory import bundled_model_path
from services.llm.llama import LlamaCppGenerator
from services.tts.speakable import speakable
from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import Message, ReplyDone, ReplyPhrase, ReplyRequested, decode
from tests.fake_gemini import FakeGeminiServer
from tests.integration.test_llm_service import _run_service as run_llm_service
from tests.mesh_support import ServiceProcess, fake_asr, service_process
from tests.ports import free_port_run
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

ANSWER = (
    "Paris is the capital of France. It sits on the river Seine, in the north of the country. "
    "It is known for the Eiffel Tower and for its museums."
)
OTHER_ANSWER = "France has many cities. Lyon is known for its food, and Marseille for its old port."
TAKEOVER_BOUND_S = 12.0
"""Kill to the end of the reply: a few seconds of takeover plus the rest of the reply. Taking over after
the old default of 15 s idle fails it."""
FRAME = 640


class SamplingGemini(FakeGeminiServer):
    """A fresh request gets ANSWER the first time and OTHER_ANSWER after that; a request whose answer is
    prefilled (it ends with a model turn) gets the rest of ANSWER after the prefilled words."""

    async def _events(self, model: str, reply: str | None = None) -> AsyncIterator[str]:
        last = self.requests[-1].body["contents"][-1]
        if last.get("role") == "model":
            said = len("".join(part.get("text", "") for part in last["parts"]).split())
            reply = " " + " ".join(ANSWER.split()[said:])
        elif len(self.requests) > 1:
            reply = OTHER_ANSWER
        async for event in super()._events(model, reply):
            yield event


@dataclass
class Client:
    """What the client got, as it arrived."""

    ws: ClientConnection
    session_id: str = ""
    transcripts: list[str] = field(default_factory=list)
    phrases: list[tuple[int, int, str]] = field(default_factory=list)  # (turn, seq, text) of reply.text
    audio: dict[int, bytearray] = field(default_factory=dict)
    sample_rate: dict[int, int] = field(default_factory=dict)
    ended: list[int] = field(default_factory=list)
    speech_started: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    _audio_turn: int | None = None

    async def read_until(self, done: Callable[[], bool], within: float) -> None:
        """Take messages until `done()` holds."""
        async with asyncio.timeout(within):
            while not done():
                self.take(await self.ws.recv())

    def take(self, message: str | bytes) -> None:
        """Record one message."""
        if isinstance(message, bytes):
            if self._audio_turn is not None:
                self.audio.setdefault(self._audio_turn, bytearray()).extend(message)
            return
        event = json.loads(message)
        kind, turn = event["type"], event.get("turn_id")
        if kind == "session.started":
            self.session_id = event["session_id"]
        elif kind == "transcript.final":
            self.transcripts.append(event["text"])
        elif kind == "reply.text":
            self.phrases.append((turn, event["seq"], event["text"]))
        elif kind == "audio.start":
            self._audio_turn = turn
            self.sample_rate[turn] = event["sample_rate"]
        elif kind == "speech.started":
            self.speech_started.append(turn)
        elif kind == "audio.end":
            self.ended.append(turn)
            self._audio_turn = None
        elif kind == "error":
            self.errors.append(event)

    async def linger(self, seconds: float) -> None:
        """Take whatever else comes within `seconds`."""
        try:
            await self.read_until(lambda: False, within=seconds)
        except TimeoutError:
            pass

    def reply(self) -> tuple[int, list[str]]:
        """The answered turn and its phrases in seq order (exactly one reply.text per seq asserted)."""
        [turn] = self.ended
        seqs = [seq for t, seq, _ in self.phrases if t == turn]
        assert seqs == list(range(len(seqs))), f"phrases out of order or repeated: {seqs}"
        return turn, [text for t, _, text in self.phrases if t == turn]

    def assert_audio_says(self, turn: int, phrases: list[str]) -> None:
        """The turn's audio is, byte for byte, the fake synthesizer's audio of `phrases`, in order."""
        rate = self.sample_rate[turn]
        expected = b"".join(b"".join(fake_speech(speakable(p), rate, FakeSettings())) for p in phrases)
        got = bytes(self.audio.get(turn, b""))
        assert len(got) == len(expected), f"{len(got)} bytes of audio, {len(expected)} expected"
        assert got == expected, "the reply's audio is not its phrases' audio, chunk for chunk, in order"


async def _holder(bus: Bus, stream: str, group: str, within: float = 10.0) -> str:
    """The consumer holding the oldest pending entry of `stream`, as soon as there is one."""
    async with asyncio.timeout(within):
        while True:
            pending: Any = await bus.redis.xpending_range(stream, group, "-", "+", 1)
            if pending:
                return bytes(pending[0]["consumer"]).decode()
            await asyncio.sleep(0.005)


def _kill(replicas: dict[str, ServiceProcess], name: str) -> float:
    replicas[name].process.send_signal(signal.SIGKILL)
    return time.monotonic()


async def _tts_texts(bus: Bus, session_id: str, turn: int) -> dict[int, list[str]]:
    """Every phrase the TTS was asked to speak for the turn, by seq."""
    asked: dict[int, list[str]] = {}
    entries: Any = await bus.redis.xrange(keys.TTS_REQUESTS)
    for _, fields in entries:
        message = decode(fields)
        if isinstance(message, ReplyPhrase) and (message.session_id, message.turn_id) == (session_id, turn):
            asked.setdefault(message.seq, []).append(message.text)
    return asked


def _gemini_env(gemini: FakeGeminiServer) -> dict[str, str]:
    return {
        "GEMINI_API_KEY": gemini.api_key, "VOXMESH_LLM_GEMINI_BASE_URL": gemini.base_url,
        "VOXMESH_LLM_FIRST_PHRASE_YIELD_MS": "0", "VOXMESH_LLM_TOOLS": "false",
    }  # fmt: skip


async def _replicas(
    stack: AsyncExitStack, service: str, count: int, redis_url: str, log_dir: Path, **env: str
) -> dict[str, ServiceProcess]:
    """`count` replicas of a service, named `<service>-a`, `-b`… as their work-queue consumers, stopped
    with `stack`."""
    started: dict[str, ServiceProcess] = {}
    module = "clients.bench.fakes" if service == "tts" else ""
    for letter in "ab"[:count]:
        name = f"{service}-{letter}"
        consumer = {f"VOXMESH_{service.upper()}_CONSUMER_NAME": name}
        started[name] = await stack.enter_async_context(
            service_process(service, redis_url, log_dir, module=module, **env, **consumer)
        )
    return started


async def _gateway(stack: AsyncExitStack, redis_url: str, log_dir: Path) -> ClientConnection:
    gateway = await stack.enter_async_context(
        service_process("gateway", redis_url, log_dir, VOXMESH_GATEWAY_METRICS_PORT=str(free_port_run()))
    )
    return await stack.enter_async_context(connect(f"ws://127.0.0.1:{gateway.port}/v1/realtime", proxy=None))


async def test_an_llm_replica_killed_mid_reply(bus: Bus, redis_url: str, tmp_path: Path) -> None:
    with SamplingGemini(reply=ANSWER, words_per_chunk=2, delay_s=0.15) as gemini:
        async with AsyncExitStack() as stack:
            llms = await _replicas(stack, "llm", 2, redis_url, tmp_path, **_gemini_env(gemini))
            await _replicas(stack, "tts", 1, redis_url, tmp_path)
            asr = await stack.enter_async_context(fake_asr(bus))
            client = Client(await _gateway(stack, redis_url, tmp_path))
            await client.read_until(lambda: bool(client.session_id), within=5)
            await asr.say(client.session_id, "Tell me about Paris.")
            await client.read_until(lambda: bool(client.phrases), within=60)  # part of the reply is out
            killed_at = _kill(llms, await _holder(bus, keys.LLM_REQUESTS, keys.LLM_GROUP))
            await client.read_until(lambda: bool(client.ended), within=60)
            took_s = time.monotonic() - killed_at
            await client.linger(1.0)  # a second reply would show up now
    turn, phrases = client.reply()
    assert client.transcripts == ["Tell me about Paris."] and client.errors == []
    assert " ".join(phrases).split() == ANSWER.split(), "the reply went on where it stopped, not anew"
    client.assert_audio_says(turn, phrases)
    asked = await _tts_texts(bus, client.session_id, turn)
    assert asked == {seq: [text] for seq, text in enumerate(phrases)}, "each phrase spoken once"
    continued = gemini.requests[-1].body["contents"][-1]
    assert continued["role"] == "model", "the replica taking over asked the model to continue its answer"
    assert took_s < TAKEOVER_BOUND_S, f"the reply ended {took_s:.1f} s after its replica was killed"


async def test_a_tts_replica_killed_mid_phrase(bus: Bus, redis_url: str, tmp_path: Path) -> None:
    with SamplingGemini(reply=ANSWER, words_per_chunk=4, delay_s=0.02) as gemini:
        llm_env = _gemini_env(gemini)
        async with AsyncExitStack() as stack:
            await _replicas(stack, "llm", 1, redis_url, tmp_path, **llm_env)
            # Phrases take as long to make as to say, so the kill lands in the middle of one.
            ttss = await _replicas(stack, "tts", 2, redis_url, tmp_path, VOXMESH_FAKE_TTS_SPEED="1")
            asr = await stack.enter_async_context(fake_asr(bus))
            client = Client(await _gateway(stack, redis_url, tmp_path))
            await client.read_until(lambda: bool(client.session_id), within=5)
            await asr.say(client.session_id, "Tell me about Paris.")
            await client.read_until(lambda: bool(client.audio), within=60)  # the first chunk is out
            killed_at = _kill(ttss, await _holder(bus, keys.TTS_REQUESTS, keys.TTS_GROUP))
            await client.read_until(lambda: bool(client.ended), within=60)
            took_s = time.monotonic() - killed_at
    turn, phrases = client.reply()
    assert client.transcripts == ["Tell me about Paris."] and client.errors == []
    assert " ".join(phrases).split() == ANSWER.split()
    client.assert_audio_says(turn, phrases)
    assert took_s < TAKEOVER_BOUND_S, f"the reply ended {took_s:.1f} s after its replica was killed"


async def _speak(ws: ClientConnection, pcm: bytes, stop: asyncio.Event) -> None:
    """An open microphone: `pcm` in real-time 20 ms frames, then silence until `stop`."""
    started = time.monotonic()
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]
    sent = 0
    while not stop.is_set():
        await ws.send(frames[sent] if sent < len(frames) else silence(20, 16000))
        sent += 1
        await asyncio.sleep(max(0.0, started + sent * 0.02 - time.monotonic()))


async def test_an_asr_replica_killed_mid_utterance(bus: Bus, redis_url: str, tmp_path: Path) -> None:
    question = silence(400, 16000) + synthesize_speech("What is the capital of France?") + silence(300, 16000)
    asr_env = {"VOXMESH_ASR_TURN_POLICY": "false", "VOXMESH_ASR_PARTIAL_INTERVAL_MS": "0"}
    with SamplingGemini(reply=ANSWER, words_per_chunk=4, delay_s=0.02) as gemini:
        llm_env = _gemini_env(gemini)
        async with AsyncExitStack() as stack:
            asrs = await _replicas(stack, "asr", 2, redis_url, tmp_path, **asr_env)
            await _replicas(stack, "llm", 1, redis_url, tmp_path, **llm_env)
            await _replicas(stack, "tts", 1, redis_url, tmp_path)
            ws = await _gateway(stack, redis_url, tmp_path)
            client = Client(ws)
            await client.read_until(lambda: bool(client.session_id), within=5)
            stop = asyncio.Event()
            microphone = asyncio.create_task(_speak(ws, question, stop))
            try:
                owner = await _holder(bus, keys.ASR_DISPATCH, keys.ASR_GROUP)
                await client.read_until(lambda: bool(client.speech_started), within=30)
                killed_at = _kill(asrs, owner)  # while the question is being spoken
                await client.read_until(lambda: bool(client.ended), within=60)
                took_s = time.monotonic() - killed_at
                await client.linger(1.5)  # a second transcript would show up now
            finally:
                stop.set()
                await microphone
    turn, phrases = client.reply()
    assert len(client.transcripts) == 1 and "france" in client.transcripts[0].lower(), client.transcripts
    assert client.errors == []
    assert " ".join(phrases).split() == ANSWER.split()
    client.assert_audio_says(turn, phrases)
    assert took_s < TAKEOVER_BOUND_S, f"the reply ended {took_s:.1f} s after the ASR replica was killed"


async def test_the_bundled_model_goes_on_after_the_phrases_already_sent() -> None:
    """A replica taking a reply over, with the bundled model. Given the sentence sent as a finished assistant
    turn (the chat API), SmolLM2 said it again word for word and stopped: the reply ended there."""
    generator = await asyncio.to_thread(
        LlamaCppGenerator, bundled_model_path(), n_threads=1, max_tokens=60, temperature=0.0
    )
    prompt = [
        ChatMessage("system", "You are a helpful voice assistant. Answer in short spoken sentences."),
        ChatMessage("user", "Tell me about Paris."),
    ]
    plan = ReplyPlan("", GenerationOptions(), max_sentences=None, economy=False)
    try:
        stats = PhraseStats(time.monotonic)
        whole = [p async for p in reply_phrases(generator, prompt, plan, Usage(), stats)]
        said = whole[: 1 + next(i for i, phrase in enumerate(whole) if ends_sentence(phrase))]  # a sentence
        rest = [p async for p in reply_phrases(generator, prompt, plan, Usage(), stats, said)]
    finally:
        await generator.aclose()
    assert len(whole) > len(said) and rest, f"the reply went on after {said}: {rest}"
    said_words = " ".join(said).split()
    assert " ".join(rest).split()[: len(said_words)] != said_words, "it did not start over"


async def test_a_reply_handed_out_again_after_it_ended_adds_nothing(bus: Bus) -> None:
    """Its replica finished the reply and died before acking it: the replica handed it next must not go on
    after a finished answer (the phrases would come after the client's `audio.end`)."""
    request = ReplyRequested(
        session_id="again", turn_id=0, seq=0, text="Tell me about Paris.", speech_ended_at=0
    )
    out = StreamTail(bus, keys.session_out("again"), label="test", block_ms=200)
    seen: list[Message] = []
    with SamplingGemini(reply=ANSWER) as gemini:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(run_llm_service(bus, gemini, stop))
            await bus.send(keys.LLM_REQUESTS, request)
            async with asyncio.timeout(20):
                while not any(isinstance(m, ReplyDone) for m in seen):
                    seen += [d.message for d in await out.read()]
            await bus.send(keys.LLM_REQUESTS, request)  # the same entry, delivered again
            await asyncio.sleep(2.0)
            seen += [d.message for d in await out.read()]
            stop.set()
    await out.close()
    assert len(gemini.requests) == 1, "the model was asked again"
    assert sum(isinstance(m, ReplyDone) for m in seen) == 1
    assert [m.seq for m in seen if isinstance(m, ReplyPhrase)] == list(range(len(ANSWER.split(". "))))
