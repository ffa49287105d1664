"""The real gateway app under uvicorn in a test's own event loop (tests of the gateway's handshake)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.gateway.app import Gateway
from services.gateway.settings import GatewaySettings
from shared import keys
from shared.bus import Bus, WorkQueue
from shared.schema import ReplyRequested


@asynccontextmanager
async def serving(settings: GatewaySettings, bus: Bus, drain_s: float = 5.0) -> AsyncIterator[Gateway]:
    """The gateway's public app listening on `settings.http_host:http_port`, as `voxmesh gateway` serves
    it; on the way out its sessions get `drain_s` to end (the tests' clients have left by then)."""
    gateway = Gateway(settings, bus)
    server = gateway.server()
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield gateway
    finally:
        await gateway.drain(drain_s)
        server.should_exit = True
        await task


async def next_request(bus: Bus, group: str) -> ReplyRequested:
    """The next reply request on the LLM queue, read as a replica of `group` would (within 5 s)."""
    queue = WorkQueue(bus, keys.LLM_REQUESTS, group, "t", label="test", block_ms=100)
    await queue.ensure_group()
    try:
        async with asyncio.timeout(5):
            while not (deliveries := await queue.read()):
                pass
    finally:
        await queue.close()
    request = deliveries[0].message
    assert isinstance(request, ReplyRequested)
    return request
