"""The real-size throughput benchmark's machinery, at a tiny size."""

from __future__ import annotations

import functools

import pytest

from invdiff.benchmarks.throughput import random_adm, throughput_benchmark
from invdiff.priors.packaged import load_packaged


@pytest.mark.slow
def test_throughput_table_at_a_tiny_size(tmp_path):
    cases = [
        {"name": "cg_sense", "method": {"baseline": "cg", "params": {"max_iter": 5}}},
        {"name": "dds", "method": {"sampler": "dds", "steps": 2}, "slice_batch": 2,
         "prior": functools.partial(load_packaged, "mri_brain_64")},
    ]
    text = throughput_benchmark(data={"data_root": str(tmp_path)}, size=32, width=44, coils=3, cases=cases, threads=1)
    assert "3 coils, 64 x 44 k-space, 32 x 32 targets, 4x (unknown 32 x 44)" in text
    rows = [line for line in text.splitlines() if line.startswith("| cg_sense") or line.startswith("| dds")]
    assert rows[0].startswith("| cg_sense | 1 | 0 |") and rows[1].startswith("| dds | 2 | 2 |")
    assert "The shipped prior runs at 32 x 48, the ADM network at 32 x 64." in text


def test_random_adm_has_the_architecture_of_its_config():
    from invdiff.priors.adm import ADM_CONFIGS

    tiny = {**ADM_CONFIGS["dds_fastmri_320"], "model_channels": 32, "num_head_channels": 16, "image_size": 32}
    ADM_CONFIGS["_tiny_test"] = tiny
    try:
        prior = random_adm("_tiny_test")
    finally:
        del ADM_CONFIGS["_tiny_test"]
    assert prior.shape == (2, 32, 32) and prior.size_multiple == 32 and "random weights" in prior.source
