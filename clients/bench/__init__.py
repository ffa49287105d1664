"""Benchmarks of a running voxmesh, as `voxmesh bench ...`: latency per stage, mesh vs in-process."""

from clients.bench.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
