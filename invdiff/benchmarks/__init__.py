"""Benchmarks, selected by name from :data:`BENCHMARKS`; each returns a markdown report."""

from invdiff.benchmarks.operators import operator_benchmark

BENCHMARKS = {"operators": operator_benchmark}
