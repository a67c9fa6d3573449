import math

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture


def _mixture(d=3, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(K, d, generator=g, dtype=torch.float64)
    L = torch.randn(K, d, d, generator=g, dtype=torch.float64) * 0.5
    covs = L @ L.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture(means, covs, weights)


def test_denoiser_matches_monte_carlo():
    """E[x0 | x] by self-normalised importance sampling with prior samples as proposals."""
    gmm = _mixture()
    g = torch.Generator().manual_seed(1)
    x0 = gmm.sample(400_000, generator=g).reshape(-1, 3)
    sigma = 1.3
    x = gmm.sample(1, generator=g).reshape(1, 3) + sigma * torch.randn(1, 3, generator=g, dtype=torch.float64)
    log_w = -0.5 * ((x - x0).square().sum(1)) / sigma**2
    w = torch.softmax(log_w, 0)
    mc = (w[:, None] * x0).sum(0)
    ess = 1 / float(w.square().sum())
    exact = gmm(x.reshape(1, 1, 1, 3), sigma).reshape(3)
    assert ess > 1000
    assert float((exact - mc).norm()) < 5 / math.sqrt(ess) * float(x0.std(0).norm())


def test_denoiser_limits_and_score():
    gmm = _mixture()
    x = torch.randn(5, 1, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    # Tiny noise: the posterior mean is the input itself.
    torch.testing.assert_close(gmm(x, 1e-6), x, atol=1e-6, rtol=0)
    # Huge noise: the prior mean.
    prior_mean = (gmm.weights[:, None] * gmm.means).sum(0)
    torch.testing.assert_close(gmm(x, 1e6)[0, 0, 0], prior_mean, atol=1e-5, rtol=0)
    # Score equals the gradient of log p_sigma.
    sigma = 0.7
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(xg, sigma).sum(), xg)
    torch.testing.assert_close(gmm.score(x, sigma), grad)


def test_sample_moments():
    gmm = _mixture()
    x = gmm.sample(200_000, generator=torch.Generator().manual_seed(3)).reshape(-1, 3)
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    second = (gmm.weights[:, None, None] * (gmm.covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    torch.testing.assert_close(x.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.1, rtol=0.02)


def test_posterior_matches_bayes_rule_by_importance_sampling():
    gmm = _mixture(d=2, K=4, seed=5)
    g = torch.Generator().manual_seed(6)
    A = torch.randn(1, 2, generator=g, dtype=torch.float64)
    s = 0.4
    y = A @ gmm.sample(1, generator=g).reshape(2) + s * torch.randn(1, generator=g, dtype=torch.float64)
    post = gmm.posterior(A, y, s)
    x0 = gmm.sample(400_000, generator=g).reshape(-1, 2)
    w = torch.softmax(-0.5 * ((x0 @ A.T - y).square().sum(1)) / s**2, 0)
    mc_mean = (w[:, None] * x0).sum(0)
    mc_cov = (w[:, None, None] * (x0 - mc_mean)[:, :, None] * (x0 - mc_mean)[:, None, :]).sum(0)
    exact = post.sample(400_000, generator=g).reshape(-1, 2)
    torch.testing.assert_close(exact.mean(0), mc_mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(exact.T), mc_cov, atol=0.05, rtol=0.05)


def test_posterior_of_a_single_gaussian_is_the_textbook_formula():
    g = torch.Generator().manual_seed(7)
    d, m, s = 4, 2, 0.3
    L = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = L @ L.T + torch.eye(d, dtype=torch.float64)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    A = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, generator=g, dtype=torch.float64)
    post = GaussianMixture(mu[None], cov[None]).posterior(A, y, s)
    precision = torch.linalg.inv(cov) + A.T @ A / s**2
    cov_post = torch.linalg.inv(precision)
    mean_post = cov_post @ (torch.linalg.solve(cov, mu) + A.T @ y / s**2)
    torch.testing.assert_close(post.covs[0], cov_post)
    torch.testing.assert_close(post.means[0], mean_post)


def test_bad_input():
    gmm = _mixture()
    with pytest.raises(ValueError, match="x: expected 3 elements"):
        gmm(torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gmm(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.zeros(2, 3), torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="A: expected"):
        gmm.posterior(torch.zeros(1, 4), torch.zeros(1), 0.1)


def test_isotropic_fast_path_equals_the_general_path():
    """Isotropic covariances c_k I take the O(B K d) path; forcing the eigenvector path on the same
    mixture gives the same denoiser, log-density, score gradient and samples."""
    g = torch.Generator().manual_seed(8)
    K, d = 5, 7
    means = 4 * torch.randn(K, d, generator=g, dtype=torch.float64)
    variances = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    covs = variances[:, None, None] * torch.eye(d, dtype=torch.float64)
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    fast = GaussianMixture(means, covs, weights)
    general = GaussianMixture(means, covs, weights)
    general.iso_var = None
    general.evals, general.evecs = torch.linalg.eigh(covs)
    assert fast.iso_var is not None
    torch.testing.assert_close(fast.iso_var, variances)
    # an expanded identity is kept without copying
    assert GaussianMixture(means, torch.eye(d, dtype=torch.float64).expand(K, d, d)).covs.stride(0) == 0
    # anisotropic or non-diagonal covariances take the general path
    assert _mixture().iso_var is None
    assert GaussianMixture(means, torch.diag_embed(torch.rand(K, d, generator=g, dtype=torch.float64))).iso_var is None
    x = 5 * torch.randn(6, 1, 1, d, generator=g, dtype=torch.float64)
    for sigma in (1e-3, 0.3, 2.0, 80.0, torch.linspace(0.1, 5.0, 6, dtype=torch.float64)):
        torch.testing.assert_close(fast(x, sigma), general(x, sigma), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fast.log_prob(x, sigma), general.log_prob(x, sigma), rtol=1e-10, atol=1e-8)
    xg = x.clone().requires_grad_(True)
    (grad_fast,) = torch.autograd.grad(fast(xg, 0.5).square().sum(), xg)
    (grad_general,) = torch.autograd.grad(general(xg, 0.5).square().sum(), xg)
    torch.testing.assert_close(grad_fast, grad_general, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fast.sample(50, generator=torch.Generator().manual_seed(9)),
                               general.sample(50, generator=torch.Generator().manual_seed(9)))
    # the posterior of an isotropic prior is anisotropic and matches either way
    A = torch.randn(2, d, generator=g, dtype=torch.float64)
    y = torch.randn(2, generator=g, dtype=torch.float64)
    pf, pg = fast.posterior(A, y, 0.3), general.posterior(A, y, 0.3)
    assert pf.iso_var is None
    torch.testing.assert_close(pf.means, pg.means)
    torch.testing.assert_close(pf.weights, pg.weights)
