r"""DPS and DDS against literal transcriptions of their official variance-preserving loops.

The references below follow ``DPS2022/diffusion-posterior-sampling`` (DDPM ``p_sample`` with the
posterior variance, then ``x_t -= scale * grad_{x_prev} ||y - A(x0_hat)||``) and ``HJ-harry/DDS``
(``solver_2d.py``: Tweedie, CG from ``x0_t``, ``c1 = sqrt(1 - at_next) * eta``,
``c2 = sqrt(1 - at_next) * sqrt(1 - eta**2)``) in VP coordinates, with
:math:`\bar\alpha = 1/(1 + \sigma^2)` and a model that sees ``x_vp / sqrt(abar)``. Our VE samplers,
fed the same random numbers, must give the same samples: this checks the DPS step-size
conversion :math:`\zeta\sqrt{(1+\sigma^2)(1+\sigma'^2)}` and the DDS step form.
The official x̂₀ clamp, the network's data range and the papers' other settings
(``sampler=*_paper``) are checked against the same kind of transcription in ``test_fidelity.py``.
"""

from __future__ import annotations

import math

import torch

from invdiff.samplers import sample_dds, sample_dps
from invdiff.schedules import sigmas_vp
from operators.cg import conjugate_gradient
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def _official_dps_vp(denoiser, op, y, sigmas, zeta, generator, shape):
    abar = [1 / (1 + float(s) ** 2) for s in sigmas]
    x = float(sigmas[0]) * torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(abar[0])
    for i in range(len(sigmas) - 1):
        a_t, a_prev = abar[i], abar[i + 1]
        x = x.detach().requires_grad_(True)
        x0_hat = denoiser(x / math.sqrt(a_t), float(sigmas[i]))
        # DDPM p_sample on the respaced schedule: posterior mean and variance of q(x_{t-1} | x_t, x0).
        beta = 1 - a_t / a_prev
        coef1 = beta * math.sqrt(a_prev) / (1 - a_t)
        coef2 = (1 - a_prev) * math.sqrt(1 - beta) / (1 - a_t)
        mean = coef1 * x0_hat + coef2 * x
        var = beta * (1 - a_prev) / (1 - a_t)
        sample = mean
        if var > 0:
            sample = sample + math.sqrt(var) * torch.randn(shape, generator=generator, dtype=torch.float64)
        norm = torch.linalg.vector_norm((y - op.A(x0_hat)).flatten(1), dim=1).sum()
        (grad,) = torch.autograd.grad(norm, x)
        x = (sample - zeta * grad).detach()
    return x / math.sqrt(abar[-1])


def test_dps_matches_the_official_vp_update():
    prior, op, y, _ = gaussian_problem(seed=3, d=6, m=2, noise_std=0.2)
    ys = y.reshape(1, -1).expand(5, -1)
    sigmas = sigmas_vp(40)
    shape = (5, 1, 1, 6)
    ours, _ = sample_dps(prior, op, ys, sigmas, noise_std=0.2, zeta=0.3, generator=seeded(9))
    ref = _official_dps_vp(prior, op, ys, sigmas, 0.3, seeded(9), shape)
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-9)


def _official_dds_vp(denoiser, op, y, sigmas, eta, gamma, cg_steps, generator, shape):
    abar = [1 / (1 + float(s) ** 2) for s in sigmas]
    x = float(sigmas[0]) * torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(abar[0])
    ATy = op.AT(y)
    for i in range(len(sigmas) - 1):
        at, at_next = abar[i], abar[i + 1]
        x0_t = denoiser(x / math.sqrt(at), float(sigmas[i]))
        et = (x - math.sqrt(at) * x0_t) / math.sqrt(1 - at)
        x0_t_hat, _ = conjugate_gradient(
            lambda v: v + gamma * op.normal(v), x0_t + gamma * ATy, x0_t, max_iter=cg_steps
        )
        c1 = math.sqrt(1 - at_next) * eta
        c2 = math.sqrt(1 - at_next) * math.sqrt(1 - eta**2)
        x = math.sqrt(at_next) * x0_t_hat + c2 * et
        if c1 > 0:
            x = x + c1 * torch.randn(shape, generator=generator, dtype=torch.float64)
    return x / math.sqrt(abar[-1])


def test_dds_matches_the_official_vp_update():
    prior, op, y, _ = gaussian_problem(seed=3, d=6, m=2, noise_std=0.2)
    ys = y.reshape(1, -1).expand(5, -1)
    sigmas = sigmas_vp(20)
    shape = (5, 1, 1, 6)
    ours, info = sample_dds(
        prior, op, ys, sigmas, noise_std=0.2, gamma=1.0, generator=seeded(9)
    )
    ref = _official_dds_vp(prior, op, ys, sigmas, 0.85, 1.0, 5, seeded(9), shape)
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-9)
    assert info["gamma"] == 1.0
