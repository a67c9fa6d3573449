"""The MBIR benchmark's config: lam is tuned on volumes disjoint from the reported ones."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from invdiff.benchmarks.mbir import METHODS, TV_SAMPLERS, check_disjoint
from invdiff.samplers import SAMPLERS

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "benchmark" / "mbir.yaml"


def test_overlapping_volumes_are_refused():
    with pytest.raises(ValueError, match="overlap.*held-out"):
        check_disjoint([{"index": 1}, {"index": 0}], [{"index": 0}])
    with pytest.raises(ValueError, match="no evaluation"):
        check_disjoint([{"index": 1}], [])
    check_disjoint([{"index": 1}], [{"index": 0}])


def test_config_tunes_on_held_out_volumes_and_names_registered_samplers():
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG))
    assert cfg["lams"]
    for case in cfg["cases"]:
        check_disjoint(case["tune"], case["evaluate"])
        assert set(case["methods"]) <= set(METHODS)
    assert {sampler for sampler, _, _ in METHODS.values()} <= set(SAMPLERS)
    assert TV_SAMPLERS <= set(SAMPLERS)
