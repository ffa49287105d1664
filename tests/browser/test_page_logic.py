"""The page's own logic, run in the real browser: protocol rules, the state, and both audio worklets.

No server: the page's modules are imported into a blank page, events are scripted, and the worklets render
in an OfflineAudioContext, so the results are exact and do not depend on timing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import open_page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="module")
def page(chromium_path: str, page_without_server: str) -> Iterator[Page]:
    with open_page(chromium_path, page_without_server) as opened:
        yield opened


def test_realtime_url_follows_the_page_and_clamps_the_rate(page: Page) -> None:
    urls = page.evaluate(
        """async () => {
            const { realtimeUrl } = await import("/static/protocol.js");
            return [
                realtimeUrl(new URL("http://localhost:8000/"), 44100),
                realtimeUrl(new URL("https://voice.example.org/app/?x=1#top"), 96000),
                realtimeUrl(new URL("http://10.0.0.2:9000/index.html"), 3000),
            ];
        }"""
    )
    assert urls == [
        "ws://localhost:8000/v1/realtime?output_sample_rate=44100",
        "wss://voice.example.org/app/v1/realtime?output_sample_rate=48000",
        "ws://10.0.0.2:9000/v1/realtime?output_sample_rate=8000",
    ]


def test_reply_audio_counts_only_between_audio_start_and_its_end(page: Page) -> None:
    """Client rule 1: frames of a turn after audio.clear, audio.end or a newer speech.started are dropped."""
    accepted = page.evaluate(
        """async () => {
            const { RealtimeClient } = await import("/static/protocol.js");
            const accepted = [];
            const client = new RealtimeClient("ws://unused", {
                onEvent: () => {}, onStatus: () => {}, onWire: () => {},
                onAudio: (turn, buffer) => accepted.push([turn, buffer.byteLength]),
            });
            const say = (event) => client.receive(JSON.stringify(event));
            const audio = (bytes) => client.receive(new ArrayBuffer(bytes));
            say({ type: "session.started", session_id: "s", output_sample_rate: 16000 });
            say({ type: "speech.started", turn_id: 1 });
            audio(2);                                      // before audio.start: dropped
            say({ type: "audio.start", turn_id: 1, sample_rate: 16000 });
            audio(4);                                      // turn 1
            audio(5);                                      // not whole samples: dropped
            say({ type: "audio.clear", turn_id: 1 });
            audio(6);                                      // after audio.clear: dropped
            say({ type: "speech.started", turn_id: 2 });
            say({ type: "audio.start", turn_id: 2, sample_rate: 16000, latency_ms: 500 });
            audio(8);                                      // turn 2
            say({ type: "speech.started", turn_id: 3 });
            audio(10);                                     // in flight before the barge-in: dropped
            say({ type: "audio.start", turn_id: 2, sample_rate: 16000 });  // stale: ignored
            audio(12);
            say({ type: "audio.start", turn_id: 3, sample_rate: 16000 });
            audio(14);                                     // turn 3
            say({ type: "audio.end", turn_id: 3 });
            audio(16);                                     // after audio.end: dropped
            say({ type: "some.future.event", turn_id: 3 }); // unknown events are ignored
            return accepted;
        }"""
    )
    assert accepted == [[1, 4], [2, 8], [3, 14]]


def test_conversation_state_orders_phrases_and_splits_what_was_heard(page: Page) -> None:
    turns = page.evaluate(
        """async () => {
            const { decodeEvent } = await import("/static/protocol.js");
            const s = await import("/static/state.js");
            const state = s.createState();
            const apply = (wire, now = 0) => s.applyServerEvent(state, decodeEvent(wire), now);
            apply({ type: "session.started", session_id: "a", output_sample_rate: 16000 });
            apply({ type: "speech.started", turn_id: 1 });
            apply({ type: "transcript.partial", turn_id: 1, text: "Tell me" });
            apply({ type: "transcript.final", turn_id: 1, text: "Tell me a story." });
            apply({ type: "transcript.partial", turn_id: 1, text: "Tell" });  // late: ignored
            apply({ type: "reply.text", turn_id: 1, seq: 1, text: "It was bright." });
            apply({ type: "reply.text", turn_id: 1, seq: 0, text: "Once upon a time, the moon rose." });
            apply({ type: "audio.start", turn_id: 1, sample_rate: 16000, latency_ms: 700 }, 1000);
            s.playbackStarted(state, "1:1", 1250, 20);
            s.playbackProgress(state, "1:1", 16000, 0);
            apply({ type: "speech.started", turn_id: 2 });
            apply({ type: "audio.clear", turn_id: 1 });
            s.playbackStopped(state, "1:1", 24000, 0, "cleared");
            apply({ type: "reply.truncated", turn_id: 1, played_ms: 1500, text: "Once upon a time," });
            apply({ type: "transcript.final", turn_id: 2, text: "How many days are in a week?" });
            apply({ type: "reply.text", turn_id: 2, seq: 0, text: "Seven." });
            apply({ type: "audio.start", turn_id: 2, sample_rate: 16000 }, 5000);  // an older server
            s.playbackStarted(state, "1:2", 5100, 0);
            s.playbackStopped(state, "1:2", 8000, 0, "drained");
            apply({ type: "error", code: "unknown_event", message: "unknown event type 'audio.played'" });
            const { turns, lastLatencyMs, samplesPlayed, lastError } = state;
            return { turns, lastLatencyMs, samplesPlayed, lastError };
        }"""
    )
    first, second = turns["turns"]
    assert first["userText"] == "Tell me a story." and first["userFinal"]
    assert first["assistantText"] == "Once upon a time, the moon rose. It was bright."
    assert first["interrupted"] and first["status"] == "interrupted"
    assert first["heardText"] == "Once upon a time,"
    assert first["unheardText"] == "the moon rose. It was bright."
    assert first["latencyMs"] == 700 + 250 + 20 and first["serverLatencyMs"] == 700
    assert first["playedMs"] == 1500
    assert second["status"] == "done" and not second["interrupted"]
    assert second["serverLatencyMs"] is None and second["latencyMs"] == second["localLatencyMs"] == 100
    assert turns["lastLatencyMs"] == 100
    assert turns["samplesPlayed"] == 24000 + 8000
    assert turns["lastError"] is None, "an error that is not about a turn only goes to the log"


def _render_player(page: Page, script: str) -> dict[str, Any]:
    """Run `script` against a player worklet in a 0.5 s OfflineAudioContext at 16 kHz; output, messages."""
    result: dict[str, Any] = page.evaluate(
        """async (script) => {
            const context = new OfflineAudioContext({ numberOfChannels: 1, length: 8000, sampleRate: 16000 });
            await context.audioWorklet.addModule("/static/player-worklet.js");
            const options = { numberOfInputs: 0, outputChannelCount: [1] };
            const player = new AudioWorkletNode(context, "reply-player", options);
            player.connect(context.destination);
            const messages = [];
            player.port.onmessage = (event) => messages.push(event.data);
            const pcm = (values) => {
                const view = new DataView(new ArrayBuffer(values.length * 2));
                values.forEach((value, i) => view.setInt16(i * 2, value, true));
                return view.buffer;
            };
            const post = (message) => player.port.postMessage(message);
            new Function("post", "pcm", script)(post, pcm);
            await new Promise((resolve) => setTimeout(resolve, 100));  // messages reach the audio thread
            const rendered = await context.startRendering();
            await new Promise((resolve) => setTimeout(resolve, 100));  // and its messages come back
            return { output: Array.from(rendered.getChannelData(0), (x) => Math.round(x * 32768)), messages };
        }""",
        script,
    )
    return result


def test_player_plays_pieces_back_to_back_and_reports_the_end(page: Page) -> None:
    result = _render_player(
        page,
        """
        const ramp = Array.from({ length: 3000 }, (_, i) => i + 1);
        post({ type: "start", key: "k", rate: 16000 });
        post({ type: "pcm", key: "k", pcm: pcm(ramp.slice(0, 1000)) });
        post({ type: "pcm", key: "other", pcm: pcm([9, 9, 9]) });
        post({ type: "pcm", key: "k", pcm: pcm(ramp.slice(1000, 2500)) });
        post({ type: "pcm", key: "k", pcm: pcm(ramp.slice(2500)) });
        post({ type: "end", key: "k" });
        """,
    )
    played = [x for x in result["output"] if x != 0]
    assert played == list(range(1, 3001)), "every sample, in order, no gaps, nothing of another turn"
    kinds = [m["type"] for m in result["messages"]]
    assert kinds[0] == "first" and kinds[-1] == "drained", kinds
    assert result["messages"][-1] == {"type": "drained", "key": "k", "played": 3000, "underruns": 0}


def test_player_clear_stops_at_once_and_says_where(page: Page) -> None:
    result = _render_player(
        page,
        """
        post({ type: "start", key: "k", rate: 16000 });
        post({ type: "pcm", key: "k", pcm: pcm(Array(4000).fill(1000)) });
        post({ type: "clear", key: "k" });
        post({ type: "clear", key: "gone" });
        """,
    )
    assert not any(result["output"]), "nothing plays after clear"
    assert {"type": "cleared", "key": "k", "played": 0, "underruns": 0} in result["messages"]
    assert {"type": "cleared", "key": "gone", "played": None} in result["messages"]


def test_player_resamples_a_reply_at_another_rate(page: Page) -> None:
    result = _render_player(
        page,
        """
        post({ type: "start", key: "k", rate: 8000 });
        post({ type: "pcm", key: "k", pcm: pcm(Array(2000).fill(8000)) });
        post({ type: "end", key: "k" });
        """,
    )
    steady = [x for x in result["output"] if x == 8000]
    assert 3990 <= len(steady) <= 4000, "8 kHz audio takes twice as many samples at 16 kHz"
    assert result["messages"][-1]["played"] == 2000


def _microphone_frames(page: Page, frequency: float, rate: int = 48_000) -> list[list[int]]:
    """1 s of a sine at `frequency` (amplitude 0.5) through the microphone worklet; the 16 kHz frames."""
    frames: list[list[int]] = page.evaluate(
        """async ([frequency, rate]) => {
            const context = new OfflineAudioContext({ numberOfChannels: 1, length: rate, sampleRate: rate });
            await context.audioWorklet.addModule("/static/mic-worklet.js");
            const mic = new AudioWorkletNode(context, "mic-capture", { outputChannelCount: [1] });
            const tone = new OscillatorNode(context, { frequency });
            const half = new GainNode(context, { gain: 0.5 });
            tone.connect(half).connect(mic);
            mic.connect(context.destination);
            const frames = [];
            mic.port.onmessage = (event) => frames.push(event.data);
            tone.start();
            await context.startRendering();
            await new Promise((resolve) => setTimeout(resolve, 200));
            return frames.map((f) => {
                const view = new DataView(f.pcm);
                return Array.from({ length: f.pcm.byteLength / 2 }, (_, i) => view.getInt16(i * 2, true));
            });
        }""",
        [frequency, rate],
    )
    return frames


def test_microphone_worklet_sends_20ms_frames_of_16khz_speech_band(page: Page) -> None:
    frames = _microphone_frames(page, 440.0)
    assert all(len(frame) == 320 for frame in frames), "640-byte frames"
    assert 48 <= len(frames) <= 50, "1 s of audio is 50 frames (less the filter's look-ahead)"
    samples = [x for frame in frames[5:] for x in frame]
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if a < 0 <= b)
    assert abs(crossings / (len(samples) / 16_000) - 440) < 5, "the tone keeps its pitch at 16 kHz"
    rms = math.sqrt(sum(x * x for x in samples) / len(samples)) / 32768
    assert abs(rms - 0.5 / math.sqrt(2)) < 0.02, "and its level"


def test_microphone_worklet_filters_out_what_16khz_cannot_carry(page: Page) -> None:
    """A 12 kHz tone would fold back to 4 kHz, in the middle of speech, without the low-pass filter."""
    samples = [x for frame in _microphone_frames(page, 12_000.0)[5:] for x in frame]
    rms = math.sqrt(sum(x * x for x in samples) / len(samples)) / 32768
    assert rms < 0.01, rms
