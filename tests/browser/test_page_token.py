"""The page against a gateway that requires session tokens: it asks its own gateway for one and connects;
without a token endpoint it says why it cannot. The real gateway app, no models behind it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect
from pydantic import SecretStr

from services.gateway.settings import GatewaySettings
from shared.auth import TokenSettings
from shared.bus import Bus
from shared.redis_server import LocalRedisServer
from tests.browser.conftest import open_page
from tests.gateway_support import serving
from tests.ports import free_port_run

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SECRET = "browser-test-secret-" + "b" * 44


@pytest.fixture(scope="module")
def redis_server_url() -> Iterator[str]:
    with LocalRedisServer() as server:
        yield server.url


@contextmanager
def gateway_serving(redis_url: str, token_endpoint: bool, webrtc: bool = True) -> Iterator[str]:
    """The gateway's public app under uvicorn in a thread of its own (auth required); yields the page URL."""
    settings = GatewaySettings(
        webrtc=webrtc,
        redis_url=redis_url,
        http_port=free_port_run(),
        auth="required",
        token_endpoint=token_endpoint,
        tokens=TokenSettings(secret=SecretStr(SECRET), secret_file=None),
    )
    ready, stop = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    async def serve() -> None:
        bus = Bus(settings.redis_url)
        async with serving(settings, bus, drain_s=0.0):
            ready.set()
            await asyncio.to_thread(stop.wait)
        await bus.close()

    def run(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)
            ready.set()

    thread = threading.Thread(target=run, args=(lambda: asyncio.run(serve()),), name="gateway")
    thread.start()
    try:
        assert ready.wait(20) and not failures, failures
        yield f"http://127.0.0.1:{settings.http_port}/"
    finally:
        stop.set()
        thread.join(20)
    assert not failures, failures


def test_page_fetches_a_token_from_its_gateway_and_connects(
    chromium_path: str, redis_server_url: str
) -> None:
    with gateway_serving(redis_server_url, token_endpoint=True) as url, open_page(chromium_path, url) as page:
        page.get_by_role("button", name="Start conversation").click()

        expect(page.locator("#connection")).to_have_text("Connected", timeout=15_000)
        state = page.evaluate("() => window.voxmesh")
        closes = [entry["detail"] for entry in state["log"] if entry["type"] == "(closed)"]
        assert closes == ["code 1008: token required"], state["log"]  # refused once, then admitted
        assert "eyJ" not in page.evaluate("() => JSON.stringify(window.voxmesh)")  # no token in the log
        page.get_by_role("button", name="End conversation").click()


def test_page_without_a_token_endpoint_says_why_it_cannot_connect(
    chromium_path: str, redis_server_url: str
) -> None:
    no_endpoint = r"Failed to load resource: the server responded with a status of 404"
    with (
        gateway_serving(redis_server_url, token_endpoint=False) as url,
        open_page(chromium_path, url, expected_console_errors=no_endpoint) as page,
    ):
        page.get_by_role("button", name="Start conversation").click()

        expect(page.get_by_role("alert")).to_contain_text("wants a session token", timeout=15_000)
        expect(page.locator("#connection")).to_have_text("Disconnected")
        assert page.evaluate("() => window.voxmesh.lastError.kind") == "server"


def test_page_over_webrtc_fetches_a_token_after_the_offer_is_refused(
    chromium_path: str, redis_server_url: str
) -> None:
    refused = r"Failed to load resource: the server responded with a status of 401"
    with (
        gateway_serving(redis_server_url, token_endpoint=True) as url,
        open_page(chromium_path, url, expected_console_errors=refused, transport=None) as page,
    ):
        page.get_by_role("button", name="Start conversation").click()

        expect(page.locator("#connection")).to_have_text("Connected", timeout=15_000)
        state = page.evaluate("() => window.voxmesh")
        assert state["transport"] == "webrtc"
        refusals = [entry["detail"] for entry in state["log"] if entry["type"] == "(refused)"]
        assert refusals == ["HTTP 401 token: token required"], state["log"]  # refused once, then admitted
        assert "eyJ" not in page.evaluate("() => JSON.stringify(window.voxmesh)")  # no token in the log
        page.get_by_role("button", name="End conversation").click()
        expect(page.locator("#connection")).to_have_text("Not connected")


def test_page_falls_back_to_the_websocket_when_the_gateway_has_no_webrtc(
    chromium_path: str, redis_server_url: str
) -> None:
    missing = r"Failed to load resource: the server responded with a status of (404|405)"
    with (
        gateway_serving(redis_server_url, token_endpoint=True, webrtc=False) as url,
        open_page(chromium_path, url, expected_console_errors=missing, transport=None) as page,
    ):
        expect(page.locator("#transport")).to_have_value("webrtc")
        page.get_by_role("button", name="Start conversation").click()

        expect(page.locator("#connection")).to_have_text("Connected", timeout=15_000)
        expect(page.locator("#transport-used")).to_have_text("WebSocket")
        log = page.evaluate("() => window.voxmesh.log")
        assert any(entry["type"] == "WebRTC unavailable here" for entry in log), log
