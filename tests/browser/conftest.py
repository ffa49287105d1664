"""The web page in a real browser: Debian's Chromium, a WAV file as its microphone, `voxmesh up` behind it."""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from services.gateway.app import STATIC_DIR
from shared.audio import write_wav
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.ports import free_port_run
from tests.speech import silence, synthesize_speech

# Chromium's fake capture device converts any WAV; 48 kHz 16-bit mono is its native rate on Linux.
MIC_SAMPLE_RATE = 48_000


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium (apt package `chromium`); never a browser downloaded by `playwright install`."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's `chromium` package must be installed in CI (.ci/run installs it)")
        pytest.skip("browser tests need Debian's `chromium` package: apt-get install chromium")
    return path


@pytest.fixture(scope="module")
def page_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """`voxmesh up` on the bundled Redis, as `make run` starts it."""
    running = start_stack(tmp_path_factory.mktemp("stack") / "services.log", redis_url=None)
    yield running
    stop_stack(running)
    assert running.process.returncode == 0, running.log_path.read_text()[-3000:]


def microphone_wav(path: Path, *pieces: str | int) -> Path:
    """What the fake microphone hears: strings are spoken with the piper voice, ints are silence in ms."""
    rate = MIC_SAMPLE_RATE
    pcm = b"".join(
        silence(piece, rate) if isinstance(piece, int) else synthesize_speech(piece, rate) for piece in pieces
    )
    write_wav(path, pcm, MIC_SAMPLE_RATE)
    return path


class _StaticPageHandler(SimpleHTTPRequestHandler):
    """Serves the page as the gateway does (`/` and `/static/`), and nothing at `/v1/realtime`."""

    def translate_path(self, path: str) -> str:
        if urlsplit(path).path == "/":
            return str(STATIC_DIR / "index.html")
        return super().translate_path(path)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is noise in test output


@pytest.fixture(scope="module")
def page_without_server() -> Iterator[str]:
    """URL of the page served without a gateway behind it: its WebSocket never connects."""
    handler = functools.partial(_StaticPageHandler, directory=str(STATIC_DIR.parent))
    server = ThreadingHTTPServer(("127.0.0.1", free_port_run()), handler)
    thread = threading.Thread(target=server.serve_forever, name="static-page")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@contextmanager
def open_page(
    chromium_path: str,
    url: str,
    microphone: Path | None = None,
    allow_microphone: bool = True,
    expected_console_errors: str | None = None,
    transport: str | None = "websocket",
) -> Iterator[Page]:
    """The page in headless Chromium with a fake microphone: `microphone` played once then silence (a beep
    when None). With `allow_microphone` False the browser refuses it, as when a person says no.

    `transport` is the page's `?transport=` (the tests written for the WebSocket path ask for it; the
    page's own default is WebRTC); None opens the page as a person would, with its default.

    JavaScript errors on the page, and console errors not matching `expected_console_errors` (a regex),
    fail the test when the page closes.
    """
    args = ["--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]
    if allow_microphone:
        args.append("--use-fake-ui-for-media-stream")  # grants the microphone without a prompt
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not (
            expected_console_errors and re.search(expected_console_errors, message.text)
        ):
            errors.append(message.text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 860})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", on_console)
            page.goto(url if transport is None else f"{url}{'&' if '?' in url else '?'}transport={transport}")
            yield page
        finally:
            browser.close()
    # The server answers `audio.played` with an error while it does not know the event; the page only
    # logs that, so nothing reaches the console.
    assert not errors, errors


def talking_page(
    chromium_path: str, microphone: Path, stack: RunningStack, transport: str | None = "websocket"
) -> AbstractContextManager[Page]:
    """The page of a running `voxmesh up`, whose microphone says what `microphone` holds."""
    return open_page(chromium_path, f"http://127.0.0.1:{stack.port}/", microphone, transport=transport)
