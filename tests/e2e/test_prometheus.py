"""Prometheus for real: the repository's scrape config passes `promtool check config`, and a real Prometheus
server (Debian's `prometheus`, started here on loopback with that config pointed at a running `voxmesh up`)
scrapes every service; after one spoken turn every query of the Grafana dashboard is valid and the ones
about a turn return data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from clients.bench.metrics import PORT_OFFSETS
from clients.talk import talk
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.ports import free_port_run

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "voxmesh.json"
# Queries about things every answered turn does: each must return data after one turn.
TURN_METRICS = (
    "voxmesh_gateway_sessions_active", "voxmesh_turn_first_audio_seconds", "voxmesh_asr_endpoint_seconds",
    "voxmesh_asr_final_latency_seconds", "voxmesh_llm_first_token_seconds",
    "voxmesh_llm_first_phrase_seconds", "voxmesh_tts_first_byte_seconds", "voxmesh_bus_delivery_seconds",
    "voxmesh_speculative_replies_total", "voxmesh_asr_turn_verdicts_total", "voxmesh_llm_tokens_total",
    "voxmesh_audio_seconds_total",
)  # fmt: skip


def _needs(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian's prometheus package; .ci/run installs it)")
    return path


def test_the_scrape_config_passes_promtool() -> None:
    done = subprocess.run(
        [_needs("promtool"), "check", "config", str(CONFIG)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _dashboard_queries() -> list[tuple[str, str]]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel.get("title", ""), target["expr"].replace("$__rate_interval", "1m"))
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def _local_config(stack_port: int) -> dict[str, Any]:
    """The repository's config with each voxmesh job's service discovery replaced by the stack's port."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in PORT_OFFSETS:
            job.pop("dns_sd_configs", None)
            job["static_configs"] = [{"targets": [f"127.0.0.1:{stack_port + PORT_OFFSETS[job['job_name']]}"]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


@pytest.fixture(scope="module")
def prometheus_and_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningStack]]:
    binary = _needs("prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    stack = start_stack(folder / "services.log", redis_url=None)
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(_local_config(stack.port)))
    port = free_port_run()
    with (folder / "prometheus.log").open("w") as log:
        server = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                folder / "prometheus.log"
            ).read_text()
            time.sleep(0.2)
        yield url, stack
    finally:
        server.terminate()
        server.wait(timeout=20)
        stop_stack(stack)


def _query(url: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body


async def test_every_service_is_scraped_and_the_dashboard_has_data_after_a_turn(
    prometheus_and_stack: tuple[str, RunningStack], question_wav: Path
) -> None:
    url, stack = prometheus_and_stack
    result = await talk(question_wav, url=stack.url, timeout_s=90)
    assert result.reply_audio
    time.sleep(4)  # a few scrapes after the turn  # noqa: ASYNC251 - nothing else runs on this loop

    up = _query(url, "up")["data"]["result"]
    assert {(r["metric"]["job"], r["value"][1]) for r in up} == {(job, "1") for job in PORT_OFFSETS}

    empty = []
    for title, expr in _dashboard_queries():
        found = _query(url, expr)["data"]["result"]
        if any(name in expr for name in TURN_METRICS) and not found:
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries with no data after a turn:\n" + "\n".join(empty)
