"""Benchmarks of voxmesh, as `voxmesh bench ...`: latency per stage (mesh vs in-process), and load."""

from clients.bench.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
