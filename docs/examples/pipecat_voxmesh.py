"""Pipecat's OpenAI Realtime service against voxmesh: a question from a WAV in, the spoken answer out.

    python3.11 -m venv /tmp/pipecat-venv
    /tmp/pipecat-venv/bin/pip install 'pipecat-ai[openai,silero]'   # silero: only for --local-vad
    /tmp/pipecat-venv/bin/python pipecat_voxmesh.py URL question.wav reply.wav [--local-vad]

URL: the gateway's WebSocket, e.g. ws://127.0.0.1:8000/v1/realtime (Pipecat adds ?model=...).
question.wav: mono 16-bit speech at any rate. It is played into the pipeline in real time, then silence,
as a microphone would; the first complete answer is written to reply.wav and the pipeline ends.
Without --local-vad voxmesh finds the end of the turn (server VAD); with it Pipecat's Silero VAD does,
and the service commits the input buffer and asks for the response (voxmesh's turn detection off). In a
real bot, replace WavMicrophone and Speaker with a transport's input() and output(), as in Pipecat's own
examples (docs/openai-realtime.md).
"""

import asyncio
import os
import sys
import wave

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime.events import AudioConfiguration, AudioInput, SessionProperties
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner

RATE = 24_000


class WavMicrophone(FrameProcessor):
    """Plays a mono 16-bit WAV into the pipeline in real time, then silence, as a microphone (the service
    resamples it to 24 kHz)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        with wave.open(path, "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise SystemExit(f"{path}: a mono 16-bit WAV, please")
            self._rate = wav.getframerate()
            self._pcm = wav.readframes(wav.getnframes())
        self._task: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._play())
        elif isinstance(frame, EndFrame | CancelFrame) and self._task is not None:
            await self.cancel_task(self._task)

    async def _play(self) -> None:
        await asyncio.sleep(1.0)  # let the session come up
        start, sent = asyncio.get_running_loop().time(), 0
        pcm, size = self._pcm, self._rate * 2 // 50  # 20 ms
        while True:
            chunk, pcm = (pcm[:size], pcm[size:]) if pcm else (bytes(size), b"")
            await self.push_frame(InputAudioRawFrame(audio=chunk, sample_rate=self._rate, num_channels=1))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.02 - asyncio.get_running_loop().time()))


class Transcripts(FrameProcessor):
    """Prints what the service heard (its transcription travels upstream, to the user aggregator)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            print("user:", frame.text)
        await self.push_frame(frame, direction)


class Speaker(FrameProcessor):
    """Collects the reply's audio and words; ends the pipeline after the first complete reply."""

    def __init__(self, out_path: str) -> None:
        super().__init__()
        self.out_path = out_path
        self.audio = bytearray()
        self.words: list[str] = []
        self.worker: PipelineWorker | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio += frame.audio
        elif isinstance(frame, TTSTextFrame):
            self.words.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame) and self.audio:
            print("assistant:", " ".join(self.words), f"({len(self.audio) / (RATE * 2):.1f} s of audio)")
            with wave.open(self.out_path, "wb") as wav:
                wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(RATE)
                wav.writeframes(bytes(self.audio))
            assert self.worker is not None
            await self.worker.queue_frame(EndFrame())
        await self.push_frame(frame, direction)


async def main(url: str, wav_in: str, wav_out: str, local_vad: bool) -> None:
    settings = OpenAIRealtimeLLMService.Settings(system_instruction="Answer in one short sentence.")
    user_params = LLMUserAggregatorParams()
    if local_vad:  # Pipecat detects the turns: voxmesh's turn detection off, Pipecat commits the buffer
        no_detection = AudioConfiguration(input=AudioInput(turn_detection=False))
        settings.session_properties = SessionProperties(audio=no_detection)
        user_params = LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    llm = OpenAIRealtimeLLMService(
        api_key=os.environ.get("VOXMESH_TOKEN", "voxmesh"),  # a session token where the gateway wants one
        base_url=url,  # ws://HOST:PORT/v1/realtime; Pipecat adds ?model=...
        settings=settings,
    )
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context, user_params=user_params)
    speaker = Speaker(wav_out)
    pipeline = Pipeline(
        [WavMicrophone(wav_in), aggregators.user(), Transcripts(), llm, speaker, aggregators.assistant()]
    )
    speaker.worker = PipelineWorker(pipeline)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(speaker.worker)
    await asyncio.wait_for(runner.run(), timeout=120)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], "--local-vad" in sys.argv))
