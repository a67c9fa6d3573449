"""ΠGDM: against transcriptions of RED-diff's and InverseBench's loops, the Gaussian property, guards."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.samplers import SAMPLERS, sample_pigdm
from invdiff.samplers.common import ddim_step
from invdiff.samplers.pigdm import pigdm_r2
from invdiff.schedules import sigmas_karras, sigmas_vp, vp_alphas_cumprod
from operators.base import Matrix
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def _batch(y: torch.Tensor, B: int = 3) -> torch.Tensor:
    return y.reshape(1, -1).expand(B, -1).clone()


def complex_and_twin(seed: int = 0, m: int = 2, noise_std: float = 0.3):
    """A complex problem (``Matrix(M) @ RealToComplex()`` on a 2-channel real prior) and its real twin:
    ``[Re M, -Im M; Im M, Re M]`` on the stacked parts, ``y`` stacked, noise std divided by sqrt 2."""
    from invdiff.priors.gmm import GaussianMixture
    from operators.base import Matrix, RealToComplex

    g = torch.Generator().manual_seed(seed)
    d = 3
    L = 0.5 * torch.randn(2 * d, 2 * d, generator=g, dtype=torch.float64)
    prior = GaussianMixture(torch.randn(1, 2 * d, generator=g, dtype=torch.float64),
                            (L @ L.T + 0.3 * torch.eye(2 * d, dtype=torch.float64))[None], shape=(2, 1, d))
    M = torch.randn(m, d, generator=g, dtype=torch.complex128)
    op_c = Matrix(M, (1, 1, d)) @ RealToComplex()
    x = prior.sample(3, generator=g).reshape(3, 2, 1, d)
    y_c = op_c.A(x) + noise_std / math.sqrt(2) * torch.complex(*torch.randn(2, 3, m, generator=g, dtype=torch.float64))
    # channels (0, 1) = (real, imaginary): x flattened is [Re z, Im z]
    twin = torch.cat([torch.cat([M.real, -M.imag], 1), torch.cat([M.imag, M.real], 1)], 0)
    op_r = Matrix(twin, (2, 1, d))
    y_r = torch.cat([y_c.real, y_c.imag], 1)
    return prior, op_c, y_c, op_r, y_r, noise_std / math.sqrt(2)


def red_diff_pgdm(prior, A, y_0, ts, eta, zs, k, b):
    """``PGDM.sample`` of NVlabs/RED-diff at ``66482f2`` (``algos/pgdm.py``; ``awd: True``,
    ``cond_awd: False``, ``mcg: False``, ``grad_term_weight: 1``) in its variable names, VP state in
    the network's units (``x_n = k x + b``); the model is the exact Gaussian denoiser as an
    (``et``, ``x0_pred``) pair. The start's ``H.H_pinv(y_0)`` is replaced by the caller's zero
    image (``b``), ours being pure noise; the caller's units come back as ``(x - b) / k``."""
    alphas_cumprod = vp_alphas_cumprod()
    alpha = lambda t: torch.tensor(1.0, dtype=torch.float64) if t < 0 else alphas_cumprod[t]  # noqa: E731
    H_pinv = torch.linalg.pinv(A)
    d = A.shape[1]
    H = lambda v: v.reshape(v.shape[0], d) @ A.T  # noqa: E731
    pinv = lambda u: (u @ H_pinv.T).reshape(-1, 1, 1, d)  # noqa: E731
    x_0 = torch.full_like(zs[0], b)
    x = alpha(ts[-1]).sqrt() * x_0 + (1 - alpha(ts[-1])).sqrt() * zs[0]
    ss = [-1] + list(ts[:-1])
    xt = x
    for j, (ti, si) in enumerate(zip(reversed(ts), reversed(ss))):
        alpha_t, alpha_s = alpha(ti), alpha(si)
        c1 = ((1 - alpha_t / alpha_s) * (1 - alpha_s) / (1 - alpha_t)).sqrt() * eta
        c2 = ((1 - alpha_s) - c1**2).sqrt()
        xt = xt.clone().requires_grad_(True)
        sigma_n = ((1 - alpha_t) / alpha_t).sqrt()
        x0_pred = k * prior((xt / alpha_t.sqrt() - b) / k, sigma_n / k) + b
        et = (xt - alpha_t.sqrt() * x0_pred) / (1 - alpha_t).sqrt()
        mat = (pinv(y_0) - pinv(H(x0_pred))).reshape(xt.shape[0], -1)
        mat_x = (mat.detach() * x0_pred.reshape(xt.shape[0], -1)).sum()
        grad_term = torch.autograd.grad(mat_x, xt, retain_graph=True)[0].detach()
        coeff = alpha_s.sqrt() * alpha_t.sqrt() * 1.0
        x0_pred, et = x0_pred.detach(), et.detach()
        xs = alpha_s.sqrt() * x0_pred + c1 * zs[j + 1] + c2 * et + grad_term * coeff
        xt = xs.detach()
    return (xt - b) / k


@pytest.mark.parametrize("k, b, eta", [(1.0, 0.0, 0.0), (2.0, -1.0, 0.0), (1.0, 0.0, 1.0)])
def test_noiseless_matches_red_diff(k, b, eta):
    prior, op, y, _ = gaussian_problem(seed=1, d=6, m=3, noise_std=0.0)
    prior.data_scale = k
    ys = _batch(y)
    n = 10
    sigmas = sigmas_vp(n, spacing="uniform", data_scale=k)
    ts = list(range(0, 1000, 1000 // n))
    x, info = sample_pigdm(prior, op, ys, sigmas, noise_std=0.0, generator=seeded(4), eta=eta)
    g = seeded(4)
    # Ours: the start, then one draw per step with noise (c1 > 0: every step but the last at eta = 1).
    zs = [torch.randn(x.shape, generator=g, dtype=torch.float64)]
    zs += [torch.randn(x.shape, generator=g, dtype=torch.float64) if (eta > 0 and j < n - 1) else torch.zeros(x.shape, dtype=torch.float64) for j in range(n)]
    y_0 = k * ys + b * op.matrix.sum(1)  # the network's measurements: A (k x + b)
    reference = red_diff_pgdm(prior, op.matrix, y_0, ts, eta, zs, k, b)
    torch.testing.assert_close(x, reference, rtol=1e-8, atol=1e-8)
    unguided, _ = sample_pigdm(prior, op, ys, sigmas, noise_std=0.0, generator=seeded(4), eta=eta, guidance_weight=0.0)
    assert (unguided - reference).abs().max() > 0.1  # the guidance is doing something
    assert info["nfe"] == n and info["linear_algebra"] == "closed form"


def inversebench_pigdm(net, A, observation, sigma_steps, sigma_y, z):
    """``PiGDM.inference`` of devzhk/InverseBench at ``b113d67`` (``algo/pigdm.py``, ``noisy: True``,
    ``eta = 0``) in its variable names: VE, dense inverse of ``A A^T + sigma_y^2 (1 + sigma^2)/sigma^2 I``."""
    x = z * sigma_steps[0]
    eta = 0.0
    for i in range(len(sigma_steps) - 1):
        sigma, sigma_next = sigma_steps[i], sigma_steps[i + 1]
        coeff = (sigma**2 + 1) / sigma**2
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            denoised = net(x, sigma)
        vec = observation - denoised.detach().reshape(x.shape[0], -1) @ A.T
        vec = vec @ torch.linalg.inv(A @ A.T + torch.eye(A.shape[0], dtype=A.dtype) * sigma_y**2 * coeff).T
        vec = vec @ A
        with torch.enable_grad():
            grad = torch.autograd.grad((vec.detach().reshape_as(denoised) * denoised).sum(), x)[0]
        x = denoised + math.sqrt(1 - eta**2) * sigma_next / sigma * (x - denoised)
        x = (x + grad).detach()
    return x


def test_noisy_matches_inversebench():
    """The noisy guidance through solve_normal (push-through identity) against a dense inverse."""
    prior, op, y, _ = gaussian_problem(seed=2, d=6, m=3, noise_std=0.2)
    ys = _batch(y)
    sigmas = sigmas_karras(12, 0.01, 50.0)
    x, _ = sample_pigdm(prior, op, ys, sigmas, noise_std=0.2, generator=seeded(0), eta=0.0)
    z = torch.randn(x.shape, generator=seeded(0), dtype=torch.float64)
    reference = inversebench_pigdm(prior, op.matrix, ys, sigmas.tolist(), 0.2, z)
    torch.testing.assert_close(x, reference, rtol=1e-8, atol=1e-8)
    assert (op.A(reference) - ys).norm() < 0.5 * (op.A(prior(z * 50.0, 50.0)) - ys).norm()  # guided towards y


def _one_step_shift(prior, op, y, sigma, noise_std):
    """ΠGDM's guided shift r^2 g at one step from sigma, read off the sampler (eta = 0)."""
    seen = []
    x, _ = sample_pigdm(
        prior, op, y, torch.tensor([sigma, 0.5 * sigma], dtype=torch.float64), noise_std=noise_std,
        generator=seeded(7), eta=0.0, callback=seen.append,
    )
    return seen[0]["x"], x - ddim_step(seen[0]["x"], seen[0]["x0_hat"], sigma, 0.5 * sigma, 0.0, generator=None)


def _exact_shift(prior, A, y, x, sigma, noise_std, cov0):
    """r^2 grad_x log p(y | x_t) with p(y | x_t) = N(A x0_hat(x_t), A Cov(x0|x_t) A^T + s^2 I) exactly
    (a Gaussian prior: x0_hat is linear in x_t and the covariance does not depend on it)."""
    x = x.detach().requires_grad_(True)
    x0_hat = prior(x, sigma).reshape(x.shape[0], -1)
    S = A @ cov0 @ A.T + noise_std**2 * torch.eye(A.shape[0], dtype=A.dtype)
    r = y - x0_hat @ A.T
    logp = -0.5 * (r @ torch.linalg.inv(S) * r).sum()
    return pigdm_r2(sigma) * torch.autograd.grad(logp, x)[0]


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_gaussian_approximation_exact_for_unit_isotropic_prior(sigma):
    """Prior N(m, c^2 I) with the exact denoiser: p(x0 | x_t) = N(x0_hat, c^2 s^2/(c^2 + s^2) I)
    exactly. With c = 1 that variance is the paper's r_t^2 and ΠGDM's guidance is the exact
    grad log p(y | x_t); with c != 1 (isotropic, wrong r_t^2) or an anisotropic covariance it is not."""
    g = torch.Generator().manual_seed(0)
    d, m, s = 6, 3, 0.2
    A = torch.randn(m, d, generator=g, dtype=torch.float64)
    op = Matrix(A, (1, 1, d))
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    y = _batch(torch.randn(m, generator=g, dtype=torch.float64))
    eye = torch.eye(d, dtype=torch.float64)
    L = torch.randn(d, d, generator=g, dtype=torch.float64)
    covs = {"unit": eye, "isotropic 0.25": 0.25 * eye, "anisotropic": 0.5 * L @ L.T / d + 0.1 * eye}
    errors = {}
    for name, C in covs.items():
        prior = GaussianMixture(mean[None], C[None])
        x, shift = _one_step_shift(prior, op, y, sigma, s)
        cov0 = sigma**2 * torch.linalg.solve(C + sigma**2 * eye, C)  # Cov(x0 | x_t)
        exact = _exact_shift(prior, A, y, x, sigma, s, cov0)
        errors[name] = float((shift - exact).norm() / exact.norm())
    assert errors["unit"] < 1e-10, errors
    assert errors["isotropic 0.25"] > 1e-2 and errors["anisotropic"] > 1e-2


def test_complex_measurements_are_their_real_twin():
    """Circular complex noise of E|n|^2 = s^2 is the real twin's noise of std s / sqrt 2 per part."""
    prior, op_c, y_c, op_r, y_r, s_r = complex_and_twin()
    for noise_std, twin_std in [(0.3, s_r), (0.0, 0.0)]:
        x_c, _ = sample_pigdm(prior, op_c, y_c, sigmas_vp(8), noise_std=noise_std, generator=seeded(1))
        x_r, _ = sample_pigdm(prior, op_r, y_r, sigmas_vp(8), noise_std=twin_std, generator=seeded(1))
        torch.testing.assert_close(x_c, x_r, rtol=1e-8, atol=1e-8)


def test_registered_and_bad_inputs_name_the_argument():
    assert SAMPLERS["pigdm"] is sample_pigdm
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    run = lambda **kw: sample_pigdm(prior, op, ys, sigmas_vp(5), noise_std=0.1, generator=seeded(0), **kw)  # noqa: E731
    for kw, name in [({"eta": 1.5}, "eta"), ({"guidance_weight": -1.0}, "guidance_weight"),
                     ({"max_iter": 0}, "max_iter"), ({"tol": 0.0}, "tol")]:
        with pytest.raises(ValueError, match=f"sample_pigdm: {name}"):
            run(**kw)
    with pytest.raises(ValueError, match="sample_pigdm: noise_std"):
        sample_pigdm(prior, op, ys, sigmas_vp(5), noise_std=math.inf, generator=seeded(0))
    with pytest.raises(ValueError, match="sample_pigdm: op"):
        sample_pigdm(prior, lambda x: x, ys, sigmas_vp(5), noise_std=0.1, generator=seeded(0))
