"""Benchmarks, selected by name from :data:`BENCHMARKS`; each returns a markdown report."""

from invdiff.benchmarks.denoising import denoising_benchmark
from invdiff.benchmarks.gmm import gmm_benchmark
from invdiff.benchmarks.mbir import mbir_benchmark
from invdiff.benchmarks.operators import operator_benchmark
from invdiff.benchmarks.reconstruction import reconstruction_benchmark
from invdiff.benchmarks.samplers import sampler_benchmark
from invdiff.benchmarks.solvers import solvers_benchmark
from invdiff.benchmarks.throughput import throughput_benchmark
from invdiff.benchmarks.volumes import ct_benchmark, mri_benchmark

BENCHMARKS = {
    "ct": ct_benchmark,
    "denoising": denoising_benchmark,
    "gmm": gmm_benchmark,
    "mbir": mbir_benchmark,
    "mri": mri_benchmark,
    "operators": operator_benchmark,
    "reconstruction": reconstruction_benchmark,
    "samplers": sampler_benchmark,
    "solvers": solvers_benchmark,
    "throughput": throughput_benchmark,
}
