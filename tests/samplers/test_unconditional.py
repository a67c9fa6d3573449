r"""Unconditional samplers on a Gaussian prior, where the probability-flow ODE is solved in closed form.

For :math:`x_0 \sim \mathcal N(\mu, \Sigma)`, :math:`\Sigma = U \Lambda U^T`, the ODE
:math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` maps :math:`x_T` at :math:`\sigma_{max}` to
:math:`x_0 = \mu + M (x_T - \mu)`, :math:`M = U \sqrt{\Lambda / (\Lambda + \sigma_{max}^2)}\, U^T`.
A deterministic sampler's output is affine in its start noise, so a least-squares fit over a
few samples recovers its map exactly and we compare maps, free of Monte Carlo error.
"""

from __future__ import annotations

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.samplers import UNCONDITIONAL
from invdiff.schedules import sigmas_karras, sigmas_vp
from tests.samplers import moment_errors, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

SIGMA_MAX = 80.0


def _prior(d: int = 5) -> GaussianMixture:
    g = seeded(0)
    L = 0.5 * torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = L @ L.T + 0.05 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(torch.randn(d, generator=g, dtype=torch.float64)[None], cov[None])


def _exact_map(prior: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    lam, U = torch.linalg.eigh(prior.covs[0])
    M = U @ torch.diag((lam / (lam + SIGMA_MAX**2)).sqrt()) @ U.T
    mu = prior.means[0]
    return mu - M @ mu, M


def _fitted_map(name: str, prior: GaussianMixture, n_steps: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The affine map ``x0 = a + M x_T`` the sampler applies, from 16 samples and their start noise."""
    B, d = 16, prior.dim
    seed = 1
    x, info = UNCONDITIONAL[name](
        prior, sigmas_karras(n_steps, 0.002, SIGMA_MAX), shape=(B, 1, 1, d), generator=seeded(seed)
    )
    x_T = SIGMA_MAX * torch.randn((B, 1, 1, d), generator=seeded(seed), dtype=torch.float64)
    design = torch.cat([torch.ones(B, 1, dtype=torch.float64), x_T.reshape(B, d)], 1)
    coef = torch.linalg.lstsq(design, x.reshape(B, d)).solution
    misfit = float((design @ coef - x.reshape(B, d)).abs().max())
    assert misfit < 1e-10, "the sampler is not affine in its start"
    return coef[0], coef[1:].T, info


def _map_error(name: str, prior: GaussianMixture, n_steps: int) -> tuple[float, dict]:
    a, M, info = _fitted_map(name, prior, n_steps)
    a0, M0 = _exact_map(prior)
    return float((M - M0).norm() / M0.norm() + (a - a0).norm() / a0.norm()), info


@pytest.mark.parametrize(
    "name, bound, order",
    [("euler", 0.1, 1), ("ddim", 0.1, 1), ("heun", 0.01, 2), ("dpmpp_2m", 0.01, 2)],
)
def test_deterministic_samplers_solve_the_flow(name, bound, order):
    """Observed at 50 Karras steps: Euler/DDIM 4.9e-2, Heun 4.5e-3, DPM++(2M) 4.7e-3 relative error
    of the map; halving the step divides the error by 2.0 (first order) or about 4.3 (second order)."""
    prior = _prior()
    err50, _ = _map_error(name, prior, 50)
    err25, _ = _map_error(name, prior, 25)
    print(f"\n{name}: map error {err50:.2e} at 50 steps, ratio 25/50 = {err25 / err50:.2f}")
    assert err50 < bound
    if order == 1:
        assert 1.7 < err25 / err50 < 2.4
    else:
        assert err25 / err50 > 3.3


@pytest.mark.parametrize(
    "name, n_steps, nfe",
    [("ddim", 12, 12), ("euler", 12, 12), ("heun", 12, 23), ("dpmpp_2m", 12, 12)],
)
def test_nfe(name, n_steps, nfe):
    calls = []

    class Counting(GaussianMixture):
        def forward(self, x, sigma):
            calls.append(float(sigma))
            return super().forward(x, sigma)

    base = _prior()
    prior = Counting(base.means, base.covs)
    _, info = UNCONDITIONAL[name](prior, sigmas_karras(n_steps), shape=(2, 1, 1, 5), generator=seeded(0))
    assert info["nfe"] == nfe == len(calls)
    assert info["seconds"] >= 0


@pytest.mark.parametrize(
    "name, sigmas, kwargs, cov_bound",
    [
        ("heun", sigmas_karras(40, 0.002, SIGMA_MAX), {}, 0.25),
        ("dpmpp_2m", sigmas_karras(40, 0.002, SIGMA_MAX), {}, 0.25),
        ("euler", sigmas_karras(100, 0.002, SIGMA_MAX), {}, 0.25),
        ("ddim", sigmas_vp(500), {"eta": 1.0}, 0.25),
    ],
)
def test_samples_match_the_prior(name, sigmas, kwargs, cov_bound):
    """Monte Carlo moments of 4000 samples. The bounds sit at about three times the Monte Carlo
    floor (mean: sqrt(5/4000) = 0.035 std; whitened covariance: about 0.09 in Frobenius norm):
    observed 0.03-0.05 and 0.08-0.15. DDPM's ancestral sampler needs many more steps than the ODE
    solvers for the same accuracy (0.43 at 50 steps, 0.09 at 500)."""
    prior = _prior()
    N, d = 4000, prior.dim
    x, _ = UNCONDITIONAL[name](prior, sigmas, shape=(N, 1, 1, d), generator=seeded(1), **kwargs)
    cov = prior.covs[0]
    chol = torch.linalg.cholesky(cov)
    sample_cov = torch.cov(x.reshape(N, d).T)
    half = torch.linalg.solve_triangular(chol, sample_cov, upper=False)
    whitened = torch.linalg.solve_triangular(chol, half.T, upper=False)
    cov_err = float((whitened - torch.eye(d, dtype=torch.float64)).norm())
    err = moment_errors(x, prior.means[0], cov)
    print(f"\n{name}: mean {err['mahalanobis']:.3f} std, whitened covariance error {cov_err:.3f}")
    assert err["mahalanobis"] < 0.12
    assert cov_err < cov_bound


def test_shape_is_required(generator):
    with pytest.raises(ValueError, match="shape"):
        UNCONDITIONAL["heun"](_prior(), sigmas_karras(5), shape=None, generator=generator)


def test_dtype_and_device_follow_the_denoiser(generator):
    x, _ = UNCONDITIONAL["dpmpp_2m"](_prior(), sigmas_karras(5), shape=(3, 1, 1, 5), generator=generator)
    assert x.dtype == torch.float64 and x.shape == (3, 1, 1, 5)
    x, _ = UNCONDITIONAL["dpmpp_2m"](
        _prior(), sigmas_karras(5), shape=(3, 1, 1, 5), generator=generator, dtype=torch.float32
    )
    assert x.dtype == torch.float32
