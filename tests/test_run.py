"""The run layer's checks on what a user configures: method values and the prior's size."""

import math
import warnings

import pytest
import torch

from invdiff.priors.packaged import load_packaged
from invdiff.problems import mri
from invdiff.run import Method, run_method

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"baseline": "cg", "params": {"max_iter": math.nan}}, r"methods\.m\.params\.max_iter: expected an integer >= 0, got nan"),
        ({"baseline": "cg", "params": {"max_iter": -3}}, r"methods\.m\.params\.max_iter: expected an integer >= 0, got -3"),
        ({"baseline": "cg", "params": {"tol": "small"}}, r"methods\.m\.params\.tol: expected a finite number, got 'small'"),
        ({"sampler": "dds", "steps": "abc"}, r"methods\.m\.steps: expected a positive integer, got 'abc'"),
        ({"sampler": "dds", "steps": 0}, r"methods\.m\.steps: expected a positive integer, got 0"),
        ({"sampler": "dds", "params": {"eta": math.inf}}, r"methods\.m\.params\.eta: expected a finite number, got inf"),
        ({"sampler": "dds", "params": {"cg_steps": 2.5}}, r"methods\.m\.params\.cg_steps: expected an integer >= 0"),
        ({"sampler": "dds", "params": {"denoise_last": "yes"}}, r"methods\.m\.params\.denoise_last: expected true or false"),
        ({"sampler": "smc_ensemble", "params": {"num_particles": True}}, r"num_particles: expected an integer"),
    ],
)
def test_a_bad_method_value_is_refused_when_the_method_is_built(entry, message):
    with pytest.raises(ValueError, match=message):
        Method.from_config("m", entry)


def test_good_method_values_pass_and_whole_floats_become_integers():
    method = Method.from_config("m", {"sampler": "dds", "steps": 10.0, "params": {"cg_steps": 4.0, "gamma": None}})
    assert method.steps == 10 and isinstance(method.steps, int)
    assert method.params == {"cg_steps": 4, "gamma": None} and isinstance(method.params["cg_steps"], int)
    assert Method.from_config("m", {"baseline": "cg", "params": {"max_iter": 5, "tol": 0}}).params["tol"] == 0.0


def test_a_prior_far_below_its_training_size_warns():
    prior = load_packaged("mri_brain_64")
    method = Method("dds", sampler="dds", steps=2)
    small = mri(size=8, coils=2, image="phantom")
    with pytest.warns(UserWarning, match=r"trained at 64 x 64, run on 8 x 8"):
        run_method(method, small, prior, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_method(method, mri(size=48, coils=2, image="phantom"), prior, generator=torch.Generator().manual_seed(0))
