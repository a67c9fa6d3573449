"""RED-Diff on problems with known answers."""

from __future__ import annotations

import pytest
import torch

from invdiff.samplers import sample_reddiff
from invdiff.schedules import sigmas_karras, sigmas_vp
from operators.base import Operator
from operators.nonlinear import PhaseRetrieval
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def _mahalanobis(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    diff = x.reshape(x.shape[0], -1).mean(0) - mean
    return float((diff @ torch.linalg.solve(cov, diff)).sqrt())


def test_reddiff_approaches_the_posterior_mean_of_a_gaussian():
    """With an exact Gaussian denoiser, lam = 1 / sigma_min^2 balances the two terms as Bayes' rule
    does at the last levels, so the estimates (64 seeds) average near the posterior mean: 0.18
    posterior stds observed, against 1.02 for the least-squares start and 11 for the prior mean."""
    prior, op, y, post = gaussian_problem(seed=0, d=6, m=2, noise_std=0.3)
    ys = y.reshape(1, -1).expand(64, -1)
    x, info = sample_reddiff(prior, op, ys, sigmas_karras(500, 0.05, 10.0), noise_std=0.3, generator=seeded(1),
                             lam=1 / 0.05**2)
    start = _mahalanobis(op.pinv(ys), post.means[0], post.covs[0])
    got = _mahalanobis(x, post.means[0], post.covs[0])
    print(f"\nRED-Diff: {got:.3f} posterior stds from the posterior mean (start {start:.3f})")
    assert got < 0.35 < start
    assert info["nfe"] == 500 and info["residual_norm"].shape == (64,)


def test_without_the_regulariser_it_fits_the_data():
    prior, op, y, _ = gaussian_problem(seed=1, d=6, m=2, noise_std=0.3)
    x, info = sample_reddiff(prior, op, y[None], sigmas_vp(100), noise_std=0.3, generator=seeded(1), lam=0.0,
                             init="prior_mean")
    assert float(info["residual_norm"][0]) < 0.05 * float((y - op.A(prior.means[0].reshape(1, 1, 1, 6))[0]).norm())


def test_same_seed_same_estimate_and_inputs_untouched():
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = y.reshape(1, -1).expand(3, -1).clone()
    before = ys.clone()
    a, _ = sample_reddiff(prior, op, ys, sigmas_vp(30), noise_std=0.2, generator=seeded(4))
    b, _ = sample_reddiff(prior, op, ys, sigmas_vp(30), noise_std=0.2, generator=seeded(4))
    assert torch.equal(a, b) and torch.equal(ys, before)


def test_nonlinear_operator_reduces_the_residual():
    """Phase retrieval from the prior mean: RED-Diff differentiates through |F P x| by autograd."""
    prior, _, _, _ = gaussian_problem(seed=2, d=4, m=2)
    prior.shape = (1, 2, 2)
    op = PhaseRetrieval(2.0)
    y = op.A(prior.sample(1, generator=seeded(5)))
    x, info = sample_reddiff(prior, op, y, sigmas_vp(200), noise_std=0.05, generator=seeded(6), lam=1.0,
                             shape=(1, *prior.shape))
    start = float((op.A(prior.means[0].reshape(1, 1, 2, 2)) - y).norm())
    print(f"\nphase retrieval residual: {float(info['residual_norm'][0]):.3f} (prior mean {start:.3f})")
    assert info["init"] == "prior_mean"
    assert float(info["residual_norm"][0]) < 0.3 * start


class _Square(Operator):
    def A(self, x):
        return x.reshape(x.shape[0], -1) ** 2


def test_bad_input():
    prior, op, y, _ = gaussian_problem(seed=0)
    with pytest.raises(ValueError, match="init: 'pinv' needs a LinearOperator.*prior_mean"):
        sample_reddiff(prior, _Square(), y[None], sigmas_vp(5), noise_std=0.1, generator=seeded(0), init="pinv",
                       shape=(1, *prior.shape))
    with pytest.raises(ValueError, match="init: expected one of"):
        sample_reddiff(prior, op, y[None], sigmas_vp(5), noise_std=0.1, generator=seeded(0), init="zeros")
    with pytest.raises(ValueError, match="data_weight: noise_std is 0"):
        sample_reddiff(prior, op, y[None], sigmas_vp(5), noise_std=0.0, generator=seeded(0))
    with pytest.raises(ValueError, match="lr > 0"):
        sample_reddiff(prior, op, y[None], sigmas_vp(5), noise_std=0.1, generator=seeded(0), lr=0.0)
