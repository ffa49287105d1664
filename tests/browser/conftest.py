"""The web page in a real browser: Debian's Chromium, a WAV file as its microphone, `voxmesh up` behind it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from shared.audio import write_wav
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
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


@contextmanager
def talking_page(chromium_path: str, microphone: Path, stack: RunningStack) -> Iterator[Page]:
    """The page in headless Chromium, whose microphone plays `microphone` once, then silence.

    JavaScript errors on the page fail the test when the page closes.
    """
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",  # grants the microphone without a prompt
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 960, "height": 860})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", on_console)
            page.goto(f"http://127.0.0.1:{stack.port}/")
            yield page
        finally:
            browser.close()
    # The server answers `audio.played` with an error until it knows the event; that is logged, not thrown.
    assert not errors, errors
