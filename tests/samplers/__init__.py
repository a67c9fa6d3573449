"""Shared builders for the sampler tests: small linear-Gaussian problems with exact posteriors."""

from __future__ import annotations

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from operators.base import Matrix


@pytest.fixture(autouse=True)
def single_thread():
    """Run on one thread: the problems here are tiny, and intra-op threads only add overhead
    (ten times slower on a shared, busy CPU). Imported by every sampler test module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def gaussian_problem(seed: int = 0, d: int = 6, m: int = 2, noise_std: float = 0.3):
    """A single-Gaussian prior in dimension ``d``, ``m`` random measurements and its exact posterior.

    Returns:
        ``(prior, op, y, posterior)``: ``op`` a :class:`Matrix` on ``(1, 1, d)`` samples, ``y``
        one measurement ``(m,)``, ``posterior`` a one-component :class:`GaussianMixture`.
    """
    g = torch.Generator().manual_seed(seed)
    L = 0.4 * torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = L @ L.T + 0.3 * torch.eye(d, dtype=torch.float64)
    mean = 0.5 * torch.randn(d, generator=g, dtype=torch.float64)
    prior = GaussianMixture(mean[None], cov[None])
    A = torch.randn(m, d, generator=g, dtype=torch.float64)
    x_true = prior.sample(1, generator=g).reshape(d)
    y = A @ x_true + noise_std * torch.randn(m, generator=g, dtype=torch.float64)
    return prior, Matrix(A, (1, 1, d)), y, prior.posterior(A, y, noise_std)


def moment_errors(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> dict[str, float]:
    r"""How far the sample moments of ``x``, ``(N, ...)``, are from ``mean`` and ``cov``.

    Returns:
        ``mahalanobis``: :math:`\sqrt{(\bar x - m)^T C^{-1} (\bar x - m)}`, the mean error in
        posterior standard deviations; ``max_z``: the largest per-coordinate mean error in
        standard deviations; ``cov_rel``: :math:`\|\hat C - C\|_F / \|C\|_F`; ``trace_ratio``:
        :math:`\operatorname{tr}\hat C / \operatorname{tr} C`.
    """
    x = x.reshape(x.shape[0], -1).double()
    diff = x.mean(0) - mean
    sample_cov = torch.cov(x.T)
    return {
        "mahalanobis": float((diff @ torch.linalg.solve(cov, diff)).sqrt()),
        "max_z": float((diff / cov.diagonal().sqrt()).abs().max()),
        "cov_rel": float((sample_cov - cov).norm() / cov.norm()),
        "trace_ratio": float(sample_cov.trace() / cov.trace()),
    }
