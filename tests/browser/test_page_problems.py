"""What the page tells a person when something is wrong: a refused microphone, a server that is gone."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import open_page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_refused_microphone_is_explained_with_how_to_fix_it(
    chromium_path: str, page_without_server: str
) -> None:
    with open_page(chromium_path, page_without_server, allow_microphone=False) as page:
        page.get_by_role("button", name="Start conversation").click()

        expect(page.get_by_role("alert")).to_contain_text("blocked the microphone")
        expect(page.get_by_role("alert")).to_contain_text("Allow it for this page")
        expect(page.locator("#mic")).to_contain_text("Microphone blocked")
        expect(page.locator("#connection")).to_have_text("Not connected")
        expect(page.get_by_role("button", name="Try the microphone again")).to_be_visible()
        assert page.evaluate("() => window.voxmesh.lastError.kind") == "mic"
        assert page.evaluate("() => window.voxmesh.framesSent") == 0


def test_unreachable_server_is_retried_then_offers_a_reconnect_button(
    chromium_path: str, page_without_server: str
) -> None:
    # The browser itself reports each failed WebSocket handshake on the console.
    failed_handshake = r"WebSocket connection to '\S+/v1/realtime\S*' failed"
    with open_page(chromium_path, page_without_server, expected_console_errors=failed_handshake) as page:
        page.get_by_role("button", name="Start conversation").click()

        expect(page.locator("#connection")).to_contain_text("Reconnecting", timeout=10_000)
        expect(page.locator("#connection")).to_have_text("Disconnected", timeout=20_000)
        expect(page.get_by_role("alert")).to_contain_text("Can't reach the voxmesh server")
        expect(page.locator("#mic")).to_contain_text("Microphone off")  # released while nothing listens
        reconnect = page.get_by_role("button", name="Reconnect")
        expect(reconnect).to_be_visible()
        state = page.evaluate("() => window.voxmesh")
        assert state["connection"] == "disconnected" and state["lastError"]["kind"] == "server"
        assert any("/v1/realtime?output_sample_rate=" in e["detail"] for e in state["log"]), state["log"]

        reconnect.click()  # tries again, from the start
        expect(page.locator("#connection")).to_contain_text("Reconnecting", timeout=10_000)
