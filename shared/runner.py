"""What every service process shares: health/readiness/metrics over HTTP, signals, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.bus import Bus
from shared.logs import configure_logging
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)


class Readiness:
    """Ready means: models loaded, Redis reachable, not draining."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.loaded = False
        self.draining = False

    async def check(self) -> dict[str, bool]:
        """Each condition, checked now."""
        try:
            redis_ok = await asyncio.wait_for(self.bus.ping(), timeout=0.5)
        except Exception:
            redis_ok = False
        return {"loaded": self.loaded, "redis": redis_ok, "draining": self.draining}


def health_router(readiness: Readiness, *, metrics: bool = True) -> APIRouter:
    """`/healthz` (the loop answers), `/readyz` (ready for work) and, unless told not to, `/metrics`."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        state = await readiness.check()
        ok = state["loaded"] and state["redis"] and not state["draining"]
        return JSONResponse(state, status_code=200 if ok else 503)

    if metrics:
        router.include_router(metrics_router())
    return router


def metrics_router() -> APIRouter:
    """`/metrics` (Prometheus text format)."""
    router = APIRouter()

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(app: FastAPI, settings: ServiceSettings, **options: object) -> uvicorn.Server:
    """A uvicorn server for `app` that the runner starts and stops."""
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        lifespan="off",
        **options,  # type: ignore[arg-type]
    )
    return _QuietServer(config)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`: stop taking work, finish what is in flight, exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class Worker(Protocol):
    """A worker service: loads its engine, then works until told to stop."""

    name: str

    async def load(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...


async def serve_worker(worker: Worker, bus: Bus, settings: ServiceSettings) -> None:
    """Run a worker with its HTTP side; drain on SIGTERM."""
    readiness = Readiness(bus)
    app = FastAPI(title=f"voxmesh-{worker.name}", docs_url=None, redoc_url=None)
    app.include_router(health_router(readiness))
    server = http_server(app, settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with asyncio.TaskGroup() as group:
        group.create_task(server.serve())
        group.create_task(_mark_draining(stop, readiness))
        try:
            await worker.load()
            readiness.loaded = True
            log.info("ready", extra={"port": settings.http_port})
            await worker.run(stop)
        finally:
            stop.set()
            server.should_exit = True
    await bus.close()
    log.info("stopped")


async def _mark_draining(stop: asyncio.Event, readiness: Readiness) -> None:
    await stop.wait()
    readiness.draining = True
    log.info("draining")


def main_for(name: str, settings: S, build: Callable[[S, Bus], Worker]) -> None:
    """Entry point used by each worker's `__main__`: logging, bus, worker, run."""
    configure_logging(name, settings.log_level)

    async def _main() -> None:
        bus = Bus(settings.redis_url)
        await serve_worker(build(settings, bus), bus, settings)

    asyncio.run(_main())
