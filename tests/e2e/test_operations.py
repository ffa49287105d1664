"""Every service answers health, readiness and Prometheus metrics on its own port; the gateway's metrics
are on a port of their own, not its public one."""

from __future__ import annotations

import httpx
import pytest

from clients.bench.metrics import PORT_OFFSETS
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

# `voxmesh up` puts the workers right after the gateway's port, and the gateway's /metrics after them.
HEALTH_OFFSETS = {"gateway": 0, "asr": 1, "llm": 2, "tts": 3}
EXPECTED_METRIC = {
    "gateway": "voxmesh_gateway_sessions_active",
    "asr": "voxmesh_asr_final_latency_seconds",
    "llm": "voxmesh_llm_first_token_seconds",
    "tts": "voxmesh_tts_first_byte_seconds",
}


async def test_each_service_is_healthy_ready_and_exports_metrics(stack: RunningStack) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"http://127.0.0.1:{stack.port}/metrics")).status_code == 404
        for service, metric in EXPECTED_METRIC.items():
            base = f"http://127.0.0.1:{stack.port + HEALTH_OFFSETS[service]}"
            assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
            ready = await client.get(f"{base}/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"loaded": True, "redis": True, "draining": False}
            metrics_base = f"http://127.0.0.1:{stack.port + PORT_OFFSETS[service]}"
            metrics = (await client.get(f"{metrics_base}/metrics")).text
            assert f"# TYPE {metric}" in metrics
            assert "voxmesh_bus_delivery_seconds" in metrics
