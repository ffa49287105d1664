"""The page never shows a session's resume key (a secret) in its event log, run in the real browser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import open_page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

KEY = "0123456789abcdef0123456789abcdef.c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I"


@pytest.fixture(scope="module")
def page(chromium_path: str, page_without_server: str) -> Iterator[Page]:
    with open_page(chromium_path, page_without_server) as opened:
        yield opened


def test_the_event_log_hides_the_resume_key(page: Page) -> None:
    logged = page.evaluate(
        """async (key) => {
            const { RealtimeClient } = await import("/static/protocol.js");
            const logged = [];
            const client = new RealtimeClient("ws://unused", {
                onEvent: () => {}, onStatus: () => {}, onAudio: () => {},
                onWire: (direction, type, detail) => logged.push(`${type} ${detail}`),
            });
            client.receive(JSON.stringify({
                type: "session.started", session_id: "s", output_sample_rate: 16000, resume: key,
                resume_window_s: 15, resumed: false,
            }));
            return logged;
        }""",
        KEY,
    )
    assert len(logged) == 1 and logged[0].startswith("session.started"), logged
    assert KEY not in logged[0] and KEY.split(".")[1] not in logged[0] and "resume=***" in logged[0]


def test_after_a_drop_the_page_resumes_and_after_a_refusal_starts_afresh(page: Page) -> None:
    """A scripted WebSocket stands in for the server: the page offers the key only when reconnecting after
    a drop, and connects without it once the server said the session cannot be resumed."""
    offered = page.evaluate(
        """async (key) => {
            const offered = [];
            class ScriptedSocket {
                static OPEN = 1;
                constructor(url, protocols) { offered.push(protocols); ScriptedSocket.last = this; }
                send() {}
                close() {}
            }
            window.WebSocket = ScriptedSocket;
            const { RealtimeClient } = await import("/static/protocol.js");
            const client = new RealtimeClient("ws://unused/v1/realtime", {
                onEvent: () => {}, onStatus: () => {}, onWire: () => {}, onAudio: () => {},
            });
            const started = (turn) => ScriptedSocket.last.onmessage({ data: JSON.stringify({
                type: "session.started", session_id: "s", output_sample_rate: 16000, turn_id: turn,
                resume: key, resume_window_s: 15, resumed: turn > 0,
            }) });
            const until = async (count) => {
                while (offered.length < count) await new Promise((done) => setTimeout(done, 20));
            };
            client.connect();
            started(0);
            ScriptedSocket.last.onclose({ code: 1006, reason: "" });  // the network dropped
            await until(2);
            ScriptedSocket.last.onclose({ code: 1008, reason: "resume failed" });  // its window was over
            await until(3);
            started(0);
            client.close();
            return offered;
        }""",
        KEY,
    )
    assert offered == [[], ["voxmesh", f"resume.{KEY}"], []]
