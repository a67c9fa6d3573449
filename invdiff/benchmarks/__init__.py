"""Benchmarks, selected by name from :data:`BENCHMARKS`; each returns a markdown report."""

from invdiff.benchmarks.operators import operator_benchmark
from invdiff.benchmarks.samplers import sampler_benchmark

BENCHMARKS = {"operators": operator_benchmark, "samplers": sampler_benchmark}
