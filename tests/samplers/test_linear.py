"""The shared Gaussian linear algebra: Woodbury solves and exact Gaussian posterior draws."""

from __future__ import annotations

import pytest
import torch

from invdiff.samplers.linear import linear_algebra, sample_gaussian_posterior, solve_gram
from operators.base import Matrix, RealToComplex
from operators.inpainting import Inpainting
from operators.mri import MultiCoilMRI
from tests.samplers import seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_solve_gram_is_the_inverse_covariance(complex_):
    g = seeded(0)
    dtype = torch.complex128 if complex_ else torch.float64
    M = torch.randn(4, 6, dtype=dtype, generator=g)
    op = Matrix(M)
    r = torch.randn(2, 4, dtype=dtype, generator=g)
    got = solve_gram(op, r, 0.7, torch.tensor([0.1, 2.0], dtype=torch.float64))
    for i, b in enumerate((0.1, 2.0)):
        expected = torch.linalg.solve(0.7 * M @ M.mH + b * torch.eye(4, dtype=dtype), r[i])
        assert torch.allclose(got[i], expected, atol=1e-10)


def _moments(samples):
    flat = samples.reshape(samples.shape[0], -1)
    return flat.mean(0), torch.cov(flat.T)


@pytest.mark.parametrize("case", ["real", "complex", "noiseless"])
def test_sample_gaussian_posterior_is_exact(case):
    """Sample moments of many draws match the closed-form Gaussian posterior, with the complex
    measurement as its real twin (parts stacked, std s / sqrt 2)."""
    g = seeded(1)
    n, m, N = 5, 3, 40000
    s2 = 0.0 if case == "noiseless" else 0.3
    if case == "complex":
        M = torch.randn(m, n, dtype=torch.complex128, generator=g)
        twin = torch.cat([M.real, M.imag])
        y1 = torch.randn(m, dtype=torch.complex128, generator=g)
        y_twin, twin_var = torch.cat([y1.real, y1.imag]), s2 / 2
    else:
        M = torch.randn(m, n, dtype=torch.float64, generator=g)
        twin, y1, y_twin, twin_var = M, torch.randn(m, dtype=torch.float64, generator=g), None, s2
        y_twin = y1
    mean = torch.randn(n, dtype=torch.float64, generator=g)
    v = 1.7
    samples, post_mean = sample_gaussian_posterior(
        Matrix(M), y1.expand(N, m), mean.expand(N, n), v, s2, generator=seeded(2)
    )
    if case == "noiseless":
        # the prior conditioned on twin x = y: mean + P (y - twin mean), covariance v (I - P)
        P = torch.linalg.pinv(twin)
        exp_mean = mean + P @ (y_twin - twin @ mean)
        exp_cov = v * (torch.eye(n, dtype=torch.float64) - P @ twin)
    else:
        precision = torch.eye(n, dtype=torch.float64) / v + twin.T @ twin / twin_var
        exp_cov = torch.linalg.inv(precision)
        exp_mean = exp_cov @ (mean / v + twin.T @ y_twin / twin_var)
    got_mean, got_cov = _moments(samples)
    assert torch.allclose(post_mean[0], exp_mean, atol=1e-10)
    assert (got_mean - exp_mean).abs().max() < 4 * (exp_cov.diagonal().clamp_min(1e-12) / N).sqrt().max() + 1e-9
    assert (got_cov - exp_cov).norm() / exp_cov.norm() < 0.03


def test_sample_gaussian_posterior_per_sample_variance_and_cg():
    """A (B,) prior variance on a multi-coil operator (conjugate gradient) gives each sample its
    own posterior mean: the solve meets its normal equations."""
    g = seeded(3)
    H = W = 8
    maps = torch.randn(3, H, W, dtype=torch.complex128, generator=g) + 1
    op = MultiCoilMRI(maps, (torch.rand(H, W, generator=g) > 0.5).double()) @ RealToComplex()
    assert linear_algebra(op) == "conjugate gradient" and linear_algebra(Inpainting(torch.ones(H, W))) == "closed form"
    y = op.A(torch.randn(2, 2, H, W, dtype=torch.float64, generator=g))
    mean = torch.randn(2, 2, H, W, dtype=torch.float64, generator=g)
    v = torch.tensor([0.5, 3.0], dtype=torch.float64)
    _, post_mean = sample_gaussian_posterior(op, y, mean, v, 0.01, generator=seeded(4), max_iter=300, tol=1e-12)
    kappa = 2 / 0.01
    lhs = post_mean / v.reshape(-1, 1, 1, 1) + kappa * op.normal(post_mean)
    rhs = mean / v.reshape(-1, 1, 1, 1) + kappa * op.AT(y)
    assert (lhs - rhs).norm() / rhs.norm() < 1e-9


@pytest.mark.parametrize(
    "kwargs, match",
    [({"prior_var": 0.0}, "prior_var"), ({"noise_var": -1.0}, "noise_var"), ({"noise_var": float("nan")}, "noise_var")],
)
def test_sample_gaussian_posterior_rejects_bad_variances(kwargs, match):
    op = Matrix(torch.eye(3, dtype=torch.float64))
    args = {"prior_var": 1.0, "noise_var": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_gaussian_posterior(op, torch.zeros(1, 3), torch.zeros(1, 3), args["prior_var"], args["noise_var"], generator=None)


def test_sample_without_the_mean_is_the_same_draw():
    op = Matrix(torch.randn(3, 5, dtype=torch.float64, generator=seeded(5)))
    y, mean = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    for noise_var in (0.0, 0.2):
        with_mean = sample_gaussian_posterior(op, y, mean, 1.3, noise_var, generator=seeded(6))
        alone = sample_gaussian_posterior(op, y, mean, 1.3, noise_var, generator=seeded(6), with_mean=False)
        assert alone[1] is None and torch.equal(alone[0], with_mean[0])
