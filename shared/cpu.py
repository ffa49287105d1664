"""How many inference threads a model may use: the CPUs this process really has, shared fairly.

llama.cpp, CTranslate2 and onnxruntime each slow to a crawl when their threads outnumber the free cores
(measured here: SmolLM2 on two threads with one core busy decoded 3–9 tokens/s, on one thread 35–96), so
thread counts come from the CPUs available to the process, never a fixed number per service.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 `cpu.max` or v1 CFS quota), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def available_cpus(root: Path = _CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, capped by a container's CPU quota (at least 1)."""
    cpus = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def inference_threads(override: int | None, share: int, cpus: int | None = None) -> int:
    """Threads for one model: the override if set, else this process's fair part of the CPUs.

    `share` is how many model services run side by side on the same CPUs (`voxmesh up` starts three).
    """
    if override is not None:
        return max(1, override)
    return max(1, (cpus if cpus is not None else available_cpus()) // max(1, share))
