"""`python -m services.gateway`: settings → bus → app → server."""

import asyncio
import logging

from services.gateway.app import Gateway
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.logs import configure_logging
from shared.runner import http_server, stop_on_signals

log = logging.getLogger(__name__)


async def serve(settings: GatewaySettings) -> None:
    """Serve until SIGTERM/SIGINT, then drain sessions and exit."""
    bus = Bus(settings.redis_url)
    gateway = Gateway(settings, bus)
    server = http_server(gateway.app(), settings, ws_max_size=settings.ws_max_message_bytes)
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with asyncio.TaskGroup() as group:
        group.create_task(server.serve())
        log.info("ready", extra={"port": settings.http_port})
        await stop.wait()
        log.info("draining", extra={"sessions": len(gateway.sessions)})
        await gateway.drain(settings.shutdown_grace_s)
        server.should_exit = True
    await bus.close()


def main() -> None:
    """Run the gateway."""
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
