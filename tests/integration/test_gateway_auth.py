"""The real gateway app under uvicorn on a real Redis: session tokens, Origin/Host, the token endpoint and
the metrics port. Every refusal leaves Redis untouched; no token reaches a log."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from clients.talk import TalkError, converse_pcm
from clients.talk.session import token_subprotocols
from services.gateway.app import Gateway
from services.gateway.settings import GatewaySettings
from shared.auth import Tokens, TokenSettings
from shared.bus import Bus
from tests.gateway_support import serving
from tests.ports import free_port_run

pytestmark = pytest.mark.integration

SECRET = "integration-secret-" + "x" * 45
TOKENS = Tokens(SECRET.encode())


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No VOXMESH_ variables from the developer's shell leak into the gateway's settings."""
    for name in list(os.environ):
        if name.startswith("VOXMESH_"):
            monkeypatch.delenv(name)
    yield


def _settings(**values: Any) -> GatewaySettings:
    values.setdefault("auth", "required")
    values.setdefault("tokens", TokenSettings(secret=SecretStr(SECRET), secret_file=None))
    return GatewaySettings(http_host="127.0.0.1", http_port=free_port_run(), **values)


@asynccontextmanager
async def _serving(settings: GatewaySettings, bus: Bus) -> AsyncIterator[int]:
    async with serving(settings, bus):
        yield settings.http_port


def _open(
    port: int, token: str | None = None, query: str = "", host: str = "127.0.0.1", **headers: str
) -> Any:
    """A WebSocket to the gateway on loopback, as a client that reached it under `host` would open it."""
    sock = socket.create_connection(("127.0.0.1", port))
    return connect(
        f"ws://{host}:{port}/v1/realtime{query}",
        sock=sock,
        proxy=None,
        subprotocols=token_subprotocols(token),
        additional_headers=headers,
        open_timeout=5,
    )


async def _refusal(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), timeout=5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _keys(bus: Bus) -> int:
    return int(await bus.redis.dbsize())


# ---- tokens


async def test_a_valid_token_opens_a_session(bus: Bus) -> None:
    async with _serving(_settings(), bus) as port:
        for token, query in ((TOKENS.mint(), ""), (None, f"?token={TOKENS.mint()}")):
            async with _open(port, token, query) as ws:
                started = await asyncio.wait_for(ws.recv(), timeout=5)
                assert '"session.started"' in str(started)
                assert ws.subprotocol == ("voxmesh" if token else None)  # never the token
        assert await _keys(bus) > 0  # sessions, unlike refusals, do write to Redis


# Minted when the test runs, not when it is collected: a long suite would otherwise expire them all.
_BAD_TOKENS: dict[str, Callable[[], str | None]] = {
    "missing": lambda: None,
    "expired": lambda: TOKENS.mint(ttl_s=60, now=time.time() - 3600),
    "wrong-audience": lambda: Tokens(SECRET.encode(), audience="another-service").mint(),
    "bad-signature": lambda: Tokens(b"a-different-secret-" + b"y" * 45).mint(),
    "garbage": lambda: "not.a.token",
}
_REASONS = {"missing": "token required", "expired": "token expired"}


@pytest.mark.parametrize("kind", list(_BAD_TOKENS))
async def test_a_bad_token_is_refused_before_anything_reaches_redis(bus: Bus, kind: str) -> None:
    token = _BAD_TOKENS[kind]()
    reason = _REASONS.get(kind, "token invalid")
    async with _serving(_settings(), bus) as port:
        assert await _keys(bus) == 0
        async with _open(port, token) as ws:
            assert await _refusal(ws) == (1008, reason)
        if token is not None:  # the same token in the query string fares the same
            async with _open(port, None, f"?token={token}") as ws:
                assert await _refusal(ws) == (1008, reason)
        await asyncio.sleep(0.1)
        assert await _keys(bus) == 0


async def test_required_means_loopback_clients_too(bus: Bus) -> None:
    # Behind a reverse proxy every client looks local: being on 127.0.0.1 is no credential.
    async with _serving(_settings(), bus) as port, _open(port, None) as ws:
        assert await _refusal(ws) == (1008, "token required")


async def test_loopback_gateway_needs_no_token_by_default(bus: Bus) -> None:
    async with _serving(_settings(auth="auto"), bus) as port, _open(port, None) as ws:
        assert '"session.started"' in str(await asyncio.wait_for(ws.recv(), timeout=5))


async def test_the_talk_client_sends_its_token(bus: Bus) -> None:
    async with _serving(_settings(), bus) as port:
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        silence = bytes(640 * 5)
        with pytest.raises(TalkError, match="1008, token required"):
            await converse_pcm([silence], url=url, timeout_s=5)
        # Admitted: the session starts and waits for speech no service is here to hear.
        with pytest.raises(TalkError, match="no reply within"):
            await converse_pcm([silence], url=url, timeout_s=1, token=TOKENS.mint())


async def test_no_token_reaches_the_logs(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    valid, forged = TOKENS.mint(), Tokens(b"z" * 64).mint()
    async with _serving(_settings(), bus) as port:
        for token, query in (
            (valid, ""),
            (None, f"?token={valid}"),
            (forged, ""),
            (None, f"?token={forged}"),
        ):
            async with _open(port, token, query) as ws:
                with pytest.raises(ConnectionClosed):
                    while True:  # a refusal closes; an admitted session is left by closing it here
                        await asyncio.wait_for(ws.recv(), timeout=5)
                        await ws.close()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "/v1/realtime" in logged and "token=***" in logged  # uvicorn did log the paths, redacted
    assert valid not in logged and forged not in logged
    for part in (*valid.split("."), *forged.split(".")):
        assert part not in logged


# ---- Origin and Host


async def test_dns_rebinding_page_is_refused(bus: Bus) -> None:
    settings = _settings(auth="off")
    async with _serving(settings, bus) as port:
        origin = f"http://evil.example:{port}"
        async with _open(port, None, host="evil.example", Origin=origin) as ws:
            assert await _refusal(ws) == (1008, "origin not allowed")
        async with _open(port, None, Origin=f"http://evil.example:{port}") as ws:
            assert await _refusal(ws) == (1008, "origin not allowed")
        await asyncio.sleep(0.1)
        assert await _keys(bus) == 0
        # The page the gateway serves itself, on a loopback name, is welcome.
        async with _open(port, None, host="localhost", Origin=f"http://localhost:{port}") as ws:
            assert '"session.started"' in str(await asyncio.wait_for(ws.recv(), timeout=5))


async def test_configured_host_names_are_allowed(bus: Bus) -> None:
    settings = _settings(auth="off", allowed_hosts=["voice.example.org"])
    async with _serving(settings, bus) as port:
        origin = f"http://voice.example.org:{port}"
        async with _open(port, None, host="voice.example.org", Origin=origin) as ws:
            assert '"session.started"' in str(await asyncio.wait_for(ws.recv(), timeout=5))


# ---- the token endpoint


async def test_the_token_endpoint_gives_this_machine_a_working_token(bus: Bus) -> None:
    async with _serving(_settings(token_endpoint=True), bus) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            response = await client.get("/v1/token")
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            body = response.json()
            assert body["expires_in"] == 600 and TOKENS.verify(body["token"])["aud"] == "voxmesh"
            own_page = await client.get("/v1/token", headers={"Origin": f"http://127.0.0.1:{port}"})
            assert own_page.status_code == 200
            refused = [
                await client.get("/v1/token", headers={"Host": f"evil.example:{port}"}),  # DNS rebinding
                await client.get("/v1/token", headers={"Origin": "http://evil.example"}),  # another site
                await client.get("/v1/token", headers={"X-Forwarded-For": "203.0.113.9"}),  # via a proxy
                await client.get("/v1/token", headers={"Forwarded": "for=203.0.113.9"}),
                await client.get("/v1/token", headers={"Host": f"voice.example.org:{port}"}),  # public name
            ]
            assert [r.status_code for r in refused] == [403] * len(refused)
            assert all("token" not in r.json() for r in refused)


async def test_the_token_endpoint_refuses_other_machines(bus: Bus) -> None:
    gateway = Gateway(_settings(token_endpoint=True), bus)
    transport = httpx.ASGITransport(app=gateway.app(), client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        response = await client.get("/v1/token")
    assert response.status_code == 403 and "token" not in response.json()


async def test_the_token_endpoint_is_off_unless_enabled(bus: Bus) -> None:
    async with _serving(_settings(), bus) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            assert (await client.get("/v1/token")).status_code == 404


# ---- metrics


async def test_metrics_are_not_on_the_public_port(bus: Bus) -> None:
    gateway = Gateway(_settings(auth="off"), bus)
    async with _serving(gateway.settings, bus) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            assert (await client.get("/metrics")).status_code == 404
            assert (await client.get("/healthz")).status_code == 200  # probes stay on the public port
            assert (await client.get("/readyz")).status_code == 200
    transport = httpx.ASGITransport(app=gateway.metrics_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200 and "voxmesh_gateway_sessions_active" in metrics.text
        assert (await client.get("/v1/realtime")).status_code == 404


# ---- startup


def test_a_public_gateway_without_a_secret_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXMESH_")}
    env |= {"VOXMESH_GATEWAY_HTTP_HOST": "0.0.0.0", "VOXMESH_GATEWAY_HTTP_PORT": str(free_port_run())}
    result = subprocess.run(
        [sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "no token secret is set" in result.stderr and "VOXMESH_TOKEN_SECRET" in result.stderr
