"""Percentiles over turns and the mesh / in-process ratio."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from clients.bench.results import TurnResult


@dataclass(frozen=True)
class Summary:
    """p50 and p95 (linear interpolation) of `count` values, in milliseconds."""

    count: int
    p50: float
    p95: float


def summarize(values: Iterable[float]) -> Summary | None:
    """p50/p95 of the values, None when there are none."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return None
    return Summary(int(array.size), float(np.percentile(array, 50)), float(np.percentile(array, 95)))


def stage_values(turns: Sequence[TurnResult], key: str) -> list[float]:
    """The stage's values over the turns that succeeded and measured it."""
    return [turn.stages_ms[key] for turn in turns if turn.ok and key in turn.stages_ms]


def summarize_stage(turns: Sequence[TurnResult], key: str) -> Summary | None:
    """p50/p95 of one stage over the successful turns."""
    return summarize(stage_values(turns, key))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0 or math.isnan(numerator):
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Ratios:
    """Mesh over in-process at p50 and at p95."""

    p50: float | None
    p95: float | None


def ratios(mesh: Summary | None, local: Summary | None) -> Ratios:
    """How much slower (>1) or faster (<1) the mesh is than the same engines in one process."""
    if mesh is None or local is None:
        return Ratios(None, None)
    return Ratios(ratio(mesh.p50, local.p50), ratio(mesh.p95, local.p95))
