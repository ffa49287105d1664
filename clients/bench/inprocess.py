"""The mesh's engines one after another in this process: no Redis, no sockets, no hops.

End of turn: the Silero endpointer hears the utterance and then silence, fed in real time 20 ms at a
time, until it decides the utterance is over after the fixed silence (`VOXMESH_ASR_MIN_SILENCE_MS`, no
turn model; in audio time from the end of speech). Then Whisper on the utterance, the LLM to its first
phrase, and piper to its first chunk, each timed. Whisper runs twice: as Whisper ships (its padded 30 s
window: the chain the mesh is measured against) and as the mesh runs it (a window sized to the utterance).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from clients.bench.results import TurnResult
from clients.talk.microphone import Pacer
from services.asr.endpointer import Endpointer, EndpointerConfig, SileroDetector, SpeechEnded, SpeechPaused
from services.asr.engine import FasterWhisperRecognizer
from services.asr.settings import AsrSettings
from services.llm.engine import ChatMessage, GenerationError, Generator
from services.llm.factory import build_generator
from services.llm.phrases import PhraseChunker
from services.llm.settings import LlmSettings
from services.tts.engine import PiperSynthesizer, synthesis_threads
from services.tts.settings import TtsSettings
from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH, frames
from shared.cpu import inference_threads

FRAME_MS = 20
# `voxmesh up` runs three model services side by side; each gets a third of the CPUs.
CPU_SHARE = 3
OUTPUT_SAMPLE_RATE = 16000  # what the talk client asks the gateway for
_EXTRA_SILENCE_MS = 3000  # past the configured silence: the endpointer never ended the utterance


def _ms(seconds: float) -> float:
    return seconds * 1000.0


async def _close(stream: AsyncIterator[object]) -> None:
    """Stop a generation or synthesis early: closing its generator is what stops the engine's worker."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class InProcessBench:
    """The engines the services use, with the services' default settings and thread counts."""

    def __init__(
        self,
        recognizer: FasterWhisperRecognizer,
        stock_recognizer: FasterWhisperRecognizer,
        generator: Generator,
        synthesizer: PiperSynthesizer,
        asr: AsrSettings,
        llm: LlmSettings,
    ) -> None:
        self.recognizer = recognizer
        self.stock_recognizer = stock_recognizer
        self.generator = generator
        self.synthesizer = synthesizer
        self.endpointer_config = EndpointerConfig(
            min_silence_ms=asr.min_silence_ms, barge_in_min_ms=asr.barge_in_min_ms
        )
        self.system_prompt = llm.system_prompt

    @classmethod
    async def load(cls) -> InProcessBench:
        """Load and warm up every engine as the services do (blocking work off the event loop)."""
        asr, llm, tts = AsrSettings(), LlmSettings(), TtsSettings()
        threads = inference_threads(asr.cpu_threads, CPU_SHARE)
        recognizer = await asyncio.to_thread(
            lambda: FasterWhisperRecognizer.load(asr.model_path, threads, short_window=asr.short_window)
        )
        stock = await asyncio.to_thread(
            lambda: FasterWhisperRecognizer.load(asr.model_path, threads, short_window=False)
        )
        generator = await asyncio.to_thread(
            lambda: build_generator(
                gemini_api_key=llm.gemini_key(),
                gemini_model=llm.gemini_model,
                gemini_base_url=llm.gemini_base_url,
                model_path=llm.model_path,
                n_threads=inference_threads(llm.n_threads, CPU_SHARE),
                n_threads_batch=llm.n_threads_batch,
                max_tokens=llm.max_tokens,
                temperature=llm.temperature,
            )
        )
        synthesizer = await asyncio.to_thread(
            PiperSynthesizer.load, tts.chunk_ms, synthesis_threads(tts.threads)
        )
        return cls(recognizer, stock, generator, synthesizer, asr, llm)

    async def aclose(self) -> None:
        """Release the models."""
        await self.generator.aclose()
        self.recognizer.close()
        self.stock_recognizer.close()
        self.synthesizer.close()

    async def ask(self, index: int, question: str, pcm: bytes) -> TurnResult:
        """Run one question through the engines; a stage that yields nothing fails the turn."""
        result = TurnResult(index, question, "in-process")
        stages = result.stages_ms
        try:
            ended, paused_ms = await self._end_of_turn(pcm, stages)
            started = time.monotonic()
            result.transcript = await self.stock_recognizer.transcribe(ended.audio)
            stages["whisper_stock"] = _ms(time.monotonic() - started)
            started = time.monotonic()
            await self.recognizer.transcribe(ended.audio)
            stages["whisper"] = _ms(time.monotonic() - started)
            stages["asr_final"] = stages["endpoint"] + stages["whisper_stock"]
            if not result.transcript:
                raise ValueError("Whisper heard no words")
            result.reply_text = await self._first_phrase(result.transcript, stages)
            await self._first_chunk(result.reply_text, stages)
        except (ValueError, GenerationError, RuntimeError) as exc:
            result.error = str(exc)
            return result
        reply_ms = stages["llm_first_phrase"] + stages["tts_first_byte"]
        stages["first_audio"] = stages["asr_final"] + reply_ms
        stages["first_audio_short_window"] = stages["endpoint"] + stages["whisper"] + reply_ms
        del paused_ms
        return result

    async def _end_of_turn(self, pcm: bytes, stages: dict[str, float]) -> tuple[SpeechEnded, float | None]:
        """Feed speech, then silence, in real time until the endpointer ends the utterance; records the
        wait from the end of speech (audio time) and returns the utterance and when it paused."""
        endpointer = Endpointer(SileroDetector(), self.endpointer_config)
        frame_bytes = ASR_SAMPLE_RATE * FRAME_MS // 1000 * SAMPLE_WIDTH
        speech_ms = len(pcm) / (ASR_SAMPLE_RATE * SAMPLE_WIDTH) * 1000.0
        silence_ms = self.endpointer_config.min_silence_ms + _EXTRA_SILENCE_MS
        audio = pcm + bytes(ASR_SAMPLE_RATE * silence_ms // 1000 * SAMPLE_WIDTH)
        pacer = Pacer(FRAME_MS / 1000.0)
        paused_ms: float | None = None
        for frame in frames(audio, frame_bytes):
            await pacer.wait()
            for event in endpointer.feed(frame):
                if isinstance(event, SpeechPaused):
                    paused_ms = max(0.0, endpointer.position_ms - speech_ms)
                elif isinstance(event, SpeechEnded):
                    stages["endpoint"] = endpointer.position_ms - speech_ms
                    return event, paused_ms
        raise ValueError(f"the endpointer did not end the utterance within {silence_ms} ms of silence")

    async def _first_phrase(self, transcript: str, stages: dict[str, float]) -> str:
        """Generate until the chunker completes the first phrase, as the LLM service would send it."""
        prompt = [ChatMessage("system", self.system_prompt), ChatMessage("user", transcript)]
        chunker = PhraseChunker()
        started = time.monotonic()
        deltas = self.generator.stream(prompt)
        try:
            async for text in deltas:
                stages.setdefault("llm_first_token", _ms(time.monotonic() - started))
                if phrases := chunker.push(text):
                    stages["llm_first_phrase"] = _ms(time.monotonic() - started)
                    return phrases[0]
        finally:
            await _close(deltas)
        if phrases := chunker.flush():
            stages["llm_first_phrase"] = _ms(time.monotonic() - started)
            return phrases[0]
        raise ValueError("the LLM replied with no words")

    async def _first_chunk(self, phrase: str, stages: dict[str, float]) -> None:
        started = time.monotonic()
        chunks = self.synthesizer.stream(phrase, OUTPUT_SAMPLE_RATE)
        try:
            async for _chunk in chunks:
                stages["tts_first_byte"] = _ms(time.monotonic() - started)
                return
        finally:
            await _close(chunks)
        raise ValueError("piper produced no audio")
