"""Keep CPU cores busy for the duration of a benchmark, as other work on a shared machine would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

# A shell loop with no child process: killing the shell stops the load.
_SPIN = ["sh", "-c", "while :; do :; done"]


@contextmanager
def busy_cores(count: int) -> Iterator[list[int]]:
    """Run `count` busy-loop processes while the block runs; yields their pids.

    They are killed and reaped however the block ends (an error, Ctrl-C), so none outlives it.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    spinners: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            spinners.append(subprocess.Popen(_SPIN, stdin=subprocess.DEVNULL))
        yield [spinner.pid for spinner in spinners]
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
