"""CPU time and memory of the processes under test, from /proc (Linux), sampled over a run."""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every CPU, everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


MACHINE = "machine"
"""The name under which a Timeline keeps the whole machine's busy time."""


@dataclass(frozen=True)
class ProcSample:
    """One process at one moment: CPU seconds used so far (user + system) and resident memory."""

    cpu_s: float
    rss_bytes: int


def sample(pid: int) -> ProcSample | None:
    """The process's CPU time and RSS now; None once it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return ProcSample((utime + stime) / _TICKS, int(statm.split()[1]) * _PAGE)


class Timeline:
    """Samples of a set of named processes at increasing wall-clock times."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.samples: list[dict[str, ProcSample]] = []

    def add(self, at: float, pids: dict[str, int]) -> None:
        """Sample every process at wall-clock time `at`."""
        found = {name: s for name, pid in pids.items() if (s := sample(pid)) is not None}
        found[MACHINE] = ProcSample(machine_busy_s(), 0)
        self.times.append(at)
        self.samples.append(found)

    def _index(self, at: float) -> int:
        return min(max(0, bisect_left(self.times, at)), len(self.times) - 1)

    def cpu_cores(self, start: float, end: float) -> dict[str, float]:
        """Each process's mean CPU use from the sample nearest after `start` to the one at or after `end`,
        in cores (1.0 = one core busy all the time)."""
        if len(self.times) < 2:
            return {}
        first = self._index(start)
        last = max(first + 1, self._index(end))
        last = min(last, len(self.times) - 1)
        if last <= first:
            first = max(0, last - 1)
        span = self.times[last] - self.times[first]
        before, after = self.samples[first], self.samples[last]
        if span <= 0:
            return {}
        return {
            name: max(0.0, (after[name].cpu_s - before[name].cpu_s) / span)
            for name in after
            if name in before
        }

    def peak_rss(self, start: float, end: float) -> dict[str, int]:
        """Each process's largest resident memory between `start` and `end` (bytes)."""
        inside = [found for at, found in zip(self.times, self.samples, strict=True) if start <= at <= end]
        if not inside and self.samples:
            inside = [self.samples[self._index(start)]]
        peak: dict[str, int] = {}
        for found in inside:
            for name, s in found.items():
                peak[name] = max(peak.get(name, 0), s.rss_bytes)
        return peak
