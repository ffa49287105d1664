"""Every service answers health, readiness and Prometheus metrics on its own port."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

# `voxmesh up` puts the workers right after the gateway's port.
EXPECTED_METRIC = {
    0: "voxmesh_gateway_sessions_active",
    1: "voxmesh_asr_final_latency_seconds",
    2: "voxmesh_llm_first_token_seconds",
    3: "voxmesh_tts_first_byte_seconds",
}


async def test_each_service_is_healthy_ready_and_exports_metrics(stack: RunningStack) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for offset, metric in EXPECTED_METRIC.items():
            base = f"http://127.0.0.1:{stack.port + offset}"
            assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
            ready = await client.get(f"{base}/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"loaded": True, "redis": True, "draining": False}
            metrics = (await client.get(f"{base}/metrics")).text
            assert f"# TYPE {metric}" in metrics
            assert "voxmesh_bus_delivery_seconds" in metrics
