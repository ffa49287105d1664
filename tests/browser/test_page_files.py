"""The gateway serves the web page at `/` and its modules under `/static/`, and packages them."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import STATIC_DIR, Gateway
from services.gateway.settings import GatewaySettings
from shared.bus import Bus

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "app.js", "protocol.js", "rtc-client.js", "state.js", "view.js", "mic-worklet.js", "player-worklet.js",
]  # fmt: skip


@pytest.fixture
def client() -> Iterator[TestClient]:
    # No request here reaches Redis: the client never connects.
    gateway = Gateway(GatewaySettings(), Bus("redis://127.0.0.1:1/0"))
    with TestClient(gateway.app()) as test_client:
        yield test_client


def test_root_serves_the_page_and_the_page_its_modules(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text
    for name in MODULES:
        module = client.get(f"/static/{name}")
        assert module.status_code == 200, name
        assert "javascript" in module.headers["content-type"], (name, module.headers["content-type"])
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_unknown_and_escaping_paths_are_not_found(client: TestClient) -> None:
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/index.html").status_code == 404  # one address for the page


def test_static_files_are_package_data() -> None:
    """A wheel (the Docker image) carries every file of the page, not only the editable checkout."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["services.gateway"]
    packaged = {path for pattern in patterns for path in (STATIC_DIR.parent).glob(pattern)}
    assert set(STATIC_DIR.iterdir()) <= packaged
    assert {"index.html", "style.css", *MODULES} <= {path.name for path in STATIC_DIR.iterdir()}
