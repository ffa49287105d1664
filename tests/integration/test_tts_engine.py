"""PiperSynthesizer on the real bundled voice: streaming, chunk sizes, cancellation, closing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from piper import AudioChunk

from services.tts.engine import PiperSynthesizer, Synthesizer, synthesis_threads
from shared.audio import SAMPLE_WIDTH, pcm_duration_ms, read_wav
from shared.cpu import available_cpus
from tests.speech import speech_wav, synthesize_speech

pytestmark = pytest.mark.integration

TWO_SENTENCES = "Hello there, my friend. The weather is lovely today."


def _sentences(count: int) -> str:
    return " ".join(f"This is sentence number {i}." for i in range(count))


MANY_SENTENCES = _sentences(30)


@pytest.fixture(scope="module")
def synth() -> Iterator[PiperSynthesizer]:
    synthesizer = PiperSynthesizer.load()
    yield synthesizer
    synthesizer.close()


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


async def _collect(engine: Synthesizer, text: str, rate: int) -> list[bytes]:
    return [chunk async for chunk in engine.stream(text, rate)]


def _count_sentences(synth: PiperSynthesizer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the voice to count sentences it has finished synthesizing; returns the live counter."""
    produced = [0]
    real = synth.voice.synthesize

    def counting(text: str) -> Iterator[AudioChunk]:
        for sentence in real(text):
            produced[0] += 1
            yield sentence

    monkeypatch.setattr(synth.voice, "synthesize", counting)
    return produced


@pytest.mark.parametrize("rate", [16000, 22050])
async def test_streams_two_sentences_in_small_chunks(synth: PiperSynthesizer, rate: int) -> None:
    chunks = await _collect(synth, TWO_SENTENCES, rate)
    max_bytes = rate * synth.chunk_ms // 1000 * SAMPLE_WIDTH
    assert chunks
    assert all(0 < len(c) <= max_bytes and len(c) % SAMPLE_WIDTH == 0 for c in chunks)
    pcm = b"".join(chunks)
    assert 1000 < pcm_duration_ms(pcm, rate) < 10000
    assert _rms(pcm) > 500


async def test_first_chunk_comes_before_the_rest_is_synthesized(synth: PiperSynthesizer) -> None:
    start = time.perf_counter()
    first = None
    async for _ in synth.stream(_sentences(8), 16000):
        first = first or time.perf_counter() - start
    total = time.perf_counter() - start
    assert first is not None
    assert first < total / 2


async def test_cancel_after_first_chunk_stops_the_worker(
    synth: PiperSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    produced = _count_sentences(synth, monkeypatch)
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in synth.stream(MANY_SENTENCES, 16000):
            got_first.set()

    task = asyncio.create_task(consume())
    await got_first.wait()
    seen_at_cancel = produced[0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1.0)

    # One worker thread: this stream runs only after the cancelled one has stopped.
    after = b"".join(await _collect(synth, "Still working.", 16000))
    assert pcm_duration_ms(after, 16000) > 300
    long_text_sentences = produced[0] - 1
    # At most the sentence in flight at cancel time is finished; the other ~25 never start.
    assert long_text_sentences <= seen_at_cancel + 1 < 30


async def test_concurrent_streams_both_complete(synth: PiperSynthesizer) -> None:
    first, second = await asyncio.gather(
        _collect(synth, "One stream here.", 22050), _collect(synth, "And another one.", 22050)
    )
    assert pcm_duration_ms(b"".join(first), 22050) > 500
    assert pcm_duration_ms(b"".join(second), 22050) > 500


async def test_close_ends_a_running_stream_with_an_error(synth: PiperSynthesizer) -> None:
    closing = PiperSynthesizer(synth.voice)  # shares the loaded voice, owns its own thread
    stream = closing.stream(MANY_SENTENCES, 16000)
    await anext(stream)
    closing.close()
    with pytest.raises(RuntimeError, match="closed"):
        async for _ in stream:
            pass


async def test_rejects_bad_sample_rate(synth: PiperSynthesizer) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        await _collect(synth, "Hi.", 0)


def test_synthesize_speech_is_audible() -> None:
    pcm = synthesize_speech("Testing one two three.")
    assert pcm_duration_ms(pcm, 16000) > 500
    assert _rms(pcm) > 500


def test_speech_wav_has_lead_silence(tmp_path: Path) -> None:
    path = speech_wav(tmp_path / "hi.wav", "Hi there.", lead_silence_ms=300)
    pcm, rate = read_wav(path)
    lead = 300 * rate // 1000 * SAMPLE_WIDTH
    assert rate == 22050
    assert pcm[:lead] == b"\0" * lead
    assert _rms(pcm[lead:]) > 500


def test_the_voice_threads_never_spin(synth: PiperSynthesizer) -> None:
    # A spinning onnxruntime thread holds its core while idle; with threads from every CPU (the default,
    # `synthesis_threads`) that would take a core from the LLM and the ASR between phrases.
    options = synth.voice.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert synthesis_threads(None) == available_cpus() and synthesis_threads(1) == 1
