"""The Grafana dashboard asks only for metrics that exist: every voxmesh_* series in its PromQL is one
the services register (with the labels it groups and filters by), every redis_* one is exported by
the Redis exporter the deployments run; it works with any Prometheus data source."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

# Every module that defines the services' metrics, imported so that REGISTRY holds them all.
import services.asr.service
import services.gateway.app
import services.llm.service
import services.tts.service
import shared.bus
import shared.metrics
import shared.worker
from tests.deploy_support import DASHBOARD, EXPORTED_STREAMS, ROOT

pytestmark = pytest.mark.unit

_METRIC_MODULES = (services.asr.service, services.gateway.app, services.llm.service, services.tts.service)
_SHARED_MODULES = (shared.bus, shared.metrics, shared.worker)

# redis_exporter's stream metrics (--check-single-streams): name -> labels.
EXPORTER_METRICS = {
    "redis_stream_length": {"db", "stream"},
    "redis_stream_group_lag": {"db", "stream", "group"},
    "redis_stream_group_messages_pending": {"db", "stream", "group"},
}
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance", "service"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_PROMQL_WORDS = {
    "by",
    "without",
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "vector",
    "or",
    "and",
    "unless",
    "on",
    "ignoring",
    "le",
}


def _voxmesh_metrics() -> dict[str, tuple[str, set[str]]]:
    """Every voxmesh metric the code registers: name -> (type, label names)."""
    metrics: dict[str, tuple[str, set[str]]] = {}
    # REGISTRY's collectors are the metric objects themselves: their type and label names are what
    # /metrics will show (a labelled metric has no samples until first used, so samples cannot say).
    for collector in set(REGISTRY._names_to_collectors.values()):
        name = str(getattr(collector, "_name", ""))
        if name.startswith("voxmesh_"):
            metrics[name] = (str(getattr(collector, "_type", "")), set(getattr(collector, "_labelnames", ())))
    return metrics


def _voxmesh_series() -> dict[str, set[str]]:
    """Every series name the services can expose, with its label names (a histogram's _bucket adds le)."""
    series: dict[str, set[str]] = {}
    for name, (kind, labels) in _voxmesh_metrics().items():
        for suffix in _SUFFIXES.get(kind, ("",)):
            series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each metric the expression reads, with the label names it matches on."""
    found = []
    for match in re.finditer(r"\b([a-z_][a-z0-9_]*)\s*(\{([^}]*)\})?", expr):
        name = match[1]
        if not name.startswith(("voxmesh_", "redis_")):
            continue
        matchers = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", match[3] or ""))
        found.append((name, matchers))
    return found


def _grouping(expr: str) -> set[str]:
    return {label.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", expr) for label in group.split(",")}


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    series = _voxmesh_series()
    assert "voxmesh_turn_first_audio_seconds_bucket" in series, "the metric modules were not imported"
    known = {**series, **EXPORTER_METRICS}
    queries = _queries()
    assert len(queries) >= 20
    for title, expr in queries:
        selected = _selectors(expr)
        assert selected, f"{title}: {expr} reads no voxmesh or exporter metric"
        for name, matchers in selected:
            assert name in known, f"{title}: {name} is exported by nothing"
            assert matchers <= known[name] | TARGET_LABELS, f"{title}: {name} has no label {matchers}"
        # Grouping labels exist on the series grouped (le only on histogram buckets).
        labels = set.union(*(known[name] for name, _ in selected)) | TARGET_LABELS
        assert _grouping(expr) <= labels, f"{title}: groups by {_grouping(expr) - labels}"
        words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*[=~!])", re.sub(r'"[^"]*"', "", expr)))
        unknown = {w for w in words if not w.startswith(("voxmesh_", "redis_"))} - _PROMQL_WORDS - labels
        assert not unknown - {"__rate_interval", "m"}, f"{title}: unknown words {unknown}"


def test_dashboard_covers_what_operators_watch() -> None:
    read = {name for _, expr in _queries() for name, _ in _selectors(expr)}
    for needed in (
        "voxmesh_turn_first_audio_seconds_bucket",  # voice to voice
        "voxmesh_asr_final_latency_seconds_bucket",
        "voxmesh_llm_first_token_seconds_bucket",
        "voxmesh_tts_first_byte_seconds_bucket",
        "voxmesh_gateway_sessions_active",
        "voxmesh_cancel_stop_seconds_bucket",
        "voxmesh_jobs_aborted_total",
        "voxmesh_gateway_client_errors_total",
        "voxmesh_handler_errors_total",
        "redis_stream_group_lag",
        "redis_stream_group_messages_pending",
    ):
        assert needed in read, needed
    # The backlog panels look at exactly the work queues the exporter is told to watch.
    for _, expr in _queries():
        for stream_filter in re.findall(r'stream=~"([^"]+)"', expr):
            assert set(stream_filter.split("|")) == set(EXPORTED_STREAMS.split(","))


def test_dashboard_works_with_any_prometheus_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    ids = []
    for panel in _panels(dashboard):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == reference, panel["title"]
        assert panel["description"], f"{panel['title']}: say what it shows"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(t["datasource"] == reference for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert dashboard["uid"] == "voxmesh"
    assert not any(module is None for module in (*_METRIC_MODULES, *_SHARED_MODULES))


def test_deploy_docs_catalogue_every_metric() -> None:
    """docs/deploy.md's metrics table names every metric the code registers, with its type and labels."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    rows = {
        match[1]: (match[2], match[3])
        for match in re.finditer(r"^\| `(voxmesh_\w+)` \|\s*(\w+)\s*\|([^|]*)\|", text, re.MULTILINE)
    }
    documented = {}
    for name, (kind, labels) in rows.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        # Label names; the values some rows list follow in parentheses.
        documented[base] = (kind, set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels))))
    registered = _voxmesh_metrics()
    assert set(documented) == set(registered), "docs/deploy.md's metrics table and the code disagree"
    for name, (kind, labels) in registered.items():
        assert documented[name] == (kind, labels), f"{name}: documented as {documented[name]}"
