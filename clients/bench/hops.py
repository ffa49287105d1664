"""Bus hop times from the services' `voxmesh_bus_delivery_seconds` histograms: buckets scraped from every
process before and after a run, their difference, and quantiles interpolated within buckets (as
Prometheus's `histogram_quantile` does)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

BUS_METRIC = "voxmesh_bus_delivery_seconds"

Buckets = dict[str, dict[float, float]]
"""stream label -> upper bound (seconds; inf last) -> cumulative count."""

Counters = dict[str, float]
"""`name{label="value"}` -> value, for the counters a run watches."""


def parse_buckets(text: str) -> Buckets:
    """The bus delivery histogram's cumulative bucket counts per stream, from one /metrics text."""
    found: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != BUS_METRIC:
            continue
        for s in family.samples:
            if s.name == f"{BUS_METRIC}_bucket":
                stream = s.labels.get("stream", "")
                found.setdefault(stream, {})[float(s.labels["le"])] = s.value
    return found


def parse_counters(text: str, names: Iterable[str]) -> Counters:
    """The samples of the named counters, keyed `name{k="v",...}` (labels sorted)."""
    wanted = set(names)
    found: Counters = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                inner = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                found[f"{s.name}{{{inner}}}"] = s.value
    return found


def add(total: Buckets, more: Buckets, sign: float = 1.0) -> None:
    """Add (or with sign -1, subtract) `more` into `total`, bucket by bucket."""
    for stream, buckets in more.items():
        into = total.setdefault(stream, {})
        for bound, count in buckets.items():
            into[bound] = into.get(bound, 0.0) + sign * count


def merged(buckets: Buckets, streams: Iterable[str] | None = None) -> dict[float, float]:
    """The buckets of the chosen streams (all when None) added together."""
    total: dict[float, float] = {}
    for stream, counts in buckets.items():
        if streams is None or stream in streams:
            for bound, count in counts.items():
                total[bound] = total.get(bound, 0.0) + count
    return total


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """The q-quantile (0..1) in seconds, linear within its bucket; None without observations.

    A quantile in the last (+Inf) bucket is reported as that bucket's lower bound, as Prometheus does."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def count(cumulative: Mapping[float, float]) -> int:
    """How many observations the buckets hold."""
    return round(cumulative.get(math.inf, max(cumulative.values(), default=0.0)))
