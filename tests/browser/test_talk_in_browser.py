"""A person talking to the web page: real Chromium, its microphone fed from a WAV, `voxmesh up` behind it."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import microphone_wav, talking_page
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
# `VOXMESH_UPDATE_SCREENSHOT=1 pytest tests/browser` refreshes the README's picture of the page.
README_SCREENSHOT = ROOT / "docs" / "web-page.png"
ANSWER_TIMEOUT_MS = 120_000


def _state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("() => window.voxmesh")
    return state


def _wait_for(page: Page, condition: str, what: str) -> None:
    """Wait until the JS `condition` holds; on timeout fail with the page's turns and event log."""
    try:
        page.wait_for_function(condition, timeout=ANSWER_TIMEOUT_MS)
    except PlaywrightTimeoutError:
        state = _state(page)
        turns = [
            {k: t[k] for k in ("id", "status", "userText", "assistantText", "playback")}
            for t in state["turns"]
        ]
        log = [f"{e['at']} {e['direction']} {e['type']} {e['detail'][:80]}" for e in state["log"]]
        pytest.fail(f"the page never showed {what}\nturns: {turns}\nlog:\n" + "\n".join(log))


def _sent(state: dict[str, Any], event_type: str) -> list[dict[str, Any]]:
    return [entry for entry in state["log"] if entry["direction"] == "out" and entry["type"] == event_type]


def test_spoken_question_is_transcribed_answered_and_played_on_the_page(
    page_stack: RunningStack, chromium_path: str, tmp_path: Path
) -> None:
    mic = microphone_wav(tmp_path / "mic.wav", 1000, "What is the capital of France?", 12_000)
    with talking_page(chromium_path, mic, page_stack) as page:
        expect(page.locator("#connection")).to_have_text("Not connected")
        page.get_by_role("button", name="Start conversation").press("Enter")  # the keyboard works

        expect(page.locator("#connection")).to_have_text("Connected", timeout=15_000)
        expect(page.locator("#mic")).to_contain_text("Microphone on")
        expect(page.get_by_role("button", name="End conversation")).to_be_visible()
        conversation = page.locator("#turns")
        expect(conversation).to_have_attribute("aria-live", "polite")
        # "capital" only: over Opus, Whisper tiny.en hears "France" as "friends" about one time in ten (on
        # the code before and after the load fixes alike); the words are the ASR's business, not this test's.
        expect(conversation.locator(".user")).to_contain_text(re.compile("capital", re.I), timeout=60_000)

        _wait_for(
            page,
            "() => window.voxmesh.turns.some(t => t.assistantText && t.playback === 'drained')",
            "a reply played to its end",
        )
        state = _state(page)
        answered = next(t for t in state["turns"] if t["assistantText"] and t["playback"] == "drained")
        reply = page.locator(f'.turn[data-key="{answered["key"]}"]')
        expect(reply.locator(".assistant")).to_contain_text(answered["assistantText"])
        expect(reply.locator(".latency")).to_have_text(re.compile(r"\d+ ms"))
        expect(reply.locator(".unheard")).to_be_hidden()
        expect(reply.locator(".tag")).to_be_hidden()

        assert state["framesSent"] > 100, "the microphone streams 20 ms frames"
        assert state["samplesPlayed"] > 0.3 * state["outputSampleRate"], "at least 0.3 s of the reply played"
        assert answered["samplesPlayed"] == answered["samplesReceived"], "every sample received was played"
        assert answered["localLatencyMs"] is not None and answered["localLatencyMs"] >= 0
        assert state["lastLatencyMs"] == answered["latencyMs"]
        assert not answered["interrupted"]
        reports = [e["detail"] for e in _sent(state, "audio.played")]
        assert any(r.startswith(f"turn_id={answered['id']} ") for r in reports), "end of playback reported"

        page.screenshot(path=tmp_path / "page.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        page.screenshot(path=tmp_path / "phone.png", full_page=True)

        page.get_by_role("button", name="End conversation").click()
        expect(page.locator("#connection")).to_have_text("Not connected")
        expect(page.locator("#mic")).to_contain_text("Microphone off")
        expect(page.get_by_role("button", name="Start conversation")).to_be_visible()


def test_talking_over_a_reply_interrupts_it_and_the_new_question_is_answered(
    page_stack: RunningStack, chromium_path: str, tmp_path: Path
) -> None:
    # The first reply starts 1.5-2.5 s after the question (over 4 s seen on a machine busy with other
    # test runs) and lasts some 45 s; the second question starts 8 s after the first ends, so it lands
    # in the playing reply. Sooner, and a busy machine may not be playing the reply yet: the server then
    # cancels it unheard and answers both questions as one, which is not what this test is about.
    mic = microphone_wav(
        tmp_path / "mic.wav",
        1000, "Tell me a long story about the moon.", 8000, "How many days are in a week?", 12_000,
    )  # fmt: skip
    with talking_page(chromium_path, mic, page_stack) as page:
        page.get_by_role("button", name="Start conversation").click()

        _wait_for(
            page,
            """() => {
                const turns = window.voxmesh.turns;
                const cut = turns.findIndex(t => t.interrupted && t.assistantText);
                const answered = t => t.assistantText && t.playback === 'drained';
                return cut >= 0 && turns.slice(cut + 1).some(answered);
            }""",
            "an interrupted reply followed by the answer to the second question",
        )
        state = _state(page)
        page.screenshot(path=tmp_path / "interrupted.png", full_page=True)
        if os.environ.get("VOXMESH_UPDATE_SCREENSHOT"):
            shutil.copyfile(tmp_path / "interrupted.png", README_SCREENSHOT)
        page.get_by_text("Figures and event log").click()
        page.screenshot(path=tmp_path / "event-log.png", full_page=True)

        cut = next(i for i, t in enumerate(state["turns"]) if t["interrupted"] and t["assistantText"])
        first, later = state["turns"][cut], state["turns"][cut + 1 :]
        expect(page.locator(f'.turn[data-key="{first["key"]}"] .note')).to_contain_text("Interrupted")
        assert "moon" in first["userText"].lower() or "story" in first["userText"].lower(), first
        assert any("week" in t["userText"].lower() for t in later), later
        second = next(t for t in later if t["assistantText"] and t["playback"] == "drained")
        answer = page.locator(f'.turn[data-key="{second["key"]}"] .assistant')
        expect(answer).to_contain_text(second["assistantText"])
        assert first["playback"] != "drained", "the first reply never played to its end"
        assert _sent(state, "audio.played"), "where playback stopped is reported to the server"
        # With `reply.truncated` the page knows what was heard and strikes out the rest.
        if first["heardText"] is not None and first["unheardText"]:
            cut_reply = page.locator(f'.turn[data-key="{first["key"]}"]')
            expect(cut_reply.locator("del.unheard")).to_have_text(first["unheardText"])
            expect(cut_reply.locator(".tag")).to_have_text("not heard")


def test_the_page_talks_over_webrtc_by_default_and_the_reply_plays_on_the_remote_track(
    page_stack: RunningStack, chromium_path: str, tmp_path: Path
) -> None:
    mic = microphone_wav(tmp_path / "mic.wav", 1000, "What is the capital of France?", 12_000)
    with talking_page(chromium_path, mic, page_stack, transport=None) as page:
        expect(page.locator("#transport")).to_have_value("webrtc")
        page.get_by_role("button", name="Start conversation").click()
        expect(page.locator("#connection")).to_have_text("Connected", timeout=15_000)
        conversation = page.locator("#turns")
        # "capital" only: over Opus, Whisper tiny.en hears "France" as "friends" about one time in ten (on
        # the code before and after the load fixes alike); the words are the ASR's business, not this test's.
        expect(conversation.locator(".user")).to_contain_text(re.compile("capital", re.I), timeout=60_000)

        _wait_for(
            page,
            "() => window.voxmesh.turns.some(t => t.assistantText && t.playback === 'drained')",
            "a reply played to its end on the remote track",
        )
        state = _state(page)
        assert state["transport"] == "webrtc"
        answered = next(t for t in state["turns"] if t["assistantText"] and t["playback"] == "drained")
        reply = page.locator(f'.turn[data-key="{answered["key"]}"]')
        expect(reply.locator(".assistant")).to_contain_text(answered["assistantText"])
        expect(reply.locator(".latency")).to_have_text(re.compile(r"\d+ ms"))
        assert not answered["interrupted"]

        rtc = state["rtc"]
        assert rtc["packetsSent"] > 100, "the microphone track streams"
        assert rtc["audioEnergy"] > 0, "the remote track carried sound"
        assert rtc["elementPlaying"], "the page's audio element plays the remote track"
        assert answered["samplesPlayed"] > 0.3 * 48_000, "at least 0.3 s of the reply sounded on the track"
        assert state["samplesPlayed"] >= answered["samplesPlayed"]
        # The gateway counts what its track played: the page reports nothing, and sends no audio frames.
        assert not _sent(state, "audio.played")
        print(
            f"WebRTC in Chromium: jitter buffer {rtc['jitterBufferMs']} ms, heard latency "
            f"{answered['latencyMs']} ms (server {answered['serverLatencyMs']}"
            f" + page {answered['localLatencyMs']})"
        )
        expect(page.locator("#transport-used")).to_have_text("WebRTC")
        expect(page.locator("#rtc-figures")).to_contain_text("packets")

        page.get_by_role("button", name="End conversation").click()
        expect(page.locator("#connection")).to_have_text("Not connected")


def test_talking_over_a_reply_on_webrtc_interrupts_it_and_the_new_question_is_answered(
    page_stack: RunningStack, chromium_path: str, tmp_path: Path
) -> None:
    # As the WebSocket test above: the second question lands in the playing reply.
    mic = microphone_wav(
        tmp_path / "mic.wav",
        1000, "Tell me a long story about the moon.", 8000, "How many days are in a week?", 12_000,
    )  # fmt: skip
    with talking_page(chromium_path, mic, page_stack, transport="webrtc") as page:
        page.get_by_role("button", name="Start conversation").click()
        _wait_for(
            page,
            """() => {
                const turns = window.voxmesh.turns;
                const cut = turns.findIndex(t => t.interrupted && t.assistantText);
                const answered = t => t.assistantText && t.playback === 'drained';
                return cut >= 0 && turns.slice(cut + 1).some(answered);
            }""",
            "an interrupted reply followed by the answer to the second question",
        )
        state = _state(page)
        assert state["transport"] == "webrtc"
        cut = next(i for i, t in enumerate(state["turns"]) if t["interrupted"] and t["assistantText"])
        first, later = state["turns"][cut], state["turns"][cut + 1 :]
        assert first["playback"] == "cleared" and first["samplesPlayed"] > 0, first
        assert any("week" in t["userText"].lower() for t in later), later
        expect(page.locator(f'.turn[data-key="{first["key"]}"] .note')).to_contain_text("Interrupted")
        # The gateway knew what its track played: reply.truncated says what was heard.
        _wait_for(page, f"() => window.voxmesh.turns[{cut}].heardText !== null", "what was heard")
        assert not _sent(_state(page), "audio.played")
