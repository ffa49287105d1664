"""`python -m services.gateway`: settings → bus → app → server (and the metrics server on its own port)."""

import asyncio
import logging
import sys

from services.gateway.app import Gateway
from services.gateway.settings import GatewaySettings
from shared.auth import MissingSecretError
from shared.bus import Bus
from shared.logs import configure_logging
from shared.runner import http_server, stop_on_signals

log = logging.getLogger(__name__)


async def serve(settings: GatewaySettings) -> None:
    """Serve until SIGTERM/SIGINT, then drain sessions and exit."""
    bus = Bus(settings.redis_url)
    gateway = Gateway(settings, bus)
    server = gateway.server()
    metrics_at = settings.model_copy(
        update={"http_host": settings.metrics_host, "http_port": settings.metrics_port}
    )
    metrics_server = http_server(gateway.metrics_app(), metrics_at)
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with asyncio.TaskGroup() as group:
        group.create_task(server.serve())
        group.create_task(metrics_server.serve())
        log.info(
            "ready",
            extra={
                "port": settings.http_port,
                "metrics_port": settings.metrics_port,
                "auth": gateway.access.required,
            },
        )
        await stop.wait()
        log.info("draining", extra={"sessions": len(gateway.sessions)})
        await gateway.drain(settings.shutdown_grace_s)
        server.should_exit = True
        metrics_server.should_exit = True
    await bus.close()


def main() -> None:
    """Run the gateway; refuse to start one that would need tokens it cannot check."""
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    try:
        asyncio.run(serve(settings))
    except MissingSecretError as exc:
        log.error("gateway not started: %s", exc)
        sys.exit(f"voxmesh gateway: {exc}")


if __name__ == "__main__":
    main()
