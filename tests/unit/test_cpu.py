"""Inference thread counts from the CPUs a process really has: affinity, cgroup quota, fair share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.cpu import available_cpus, cgroup_cpu_limit, inference_threads

pytestmark = pytest.mark.unit


def test_cgroup_v2_quota_in_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota_in_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_a_quota_below_the_affinity_caps_the_count_and_never_reaches_zero(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{100000 * 64} 100000\n")  # more than the machine has
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("override", "share", "cpus", "expected"),
    [(None, 3, 2, 1), (None, 1, 2, 2), (None, 3, 8, 2), (None, 2, 8, 4), (4, 3, 2, 4), (0, 1, 8, 1)],
)
def test_threads_are_a_fair_share_unless_overridden(
    override: int | None, share: int, cpus: int, expected: int
) -> None:
    assert inference_threads(override, share, cpus) == expected
