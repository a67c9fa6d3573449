r"""The papers' settings, the units of the network and the complex likelihood.

* A VP ε-network behind ``data_range (0, 1)`` (:math:`k = 2`, the setting of every public ADM
  checkpoint) is evaluated exactly on its own timesteps, from 999 to 0, by the run layer's
  schedules.
* DPS (with the official ``clip_denoised`` clamp), DDS (the official time grid, ``gamma = 1``
  and the noise-free last step) and RED-Diff (the official mean losses) match transcriptions of
  the official loops, written in the network's VP units on the network's data, fed the same
  random numbers.
* A complex measurement and the same measurement as a real one (real and imaginary parts
  stacked, noise std :math:`s/\sqrt 2`) give the same DDS and RED-Diff reconstructions: the
  complex likelihood is :math:`\|r\|^2/s^2`.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invdiff.priors.adapters import VPDenoiser
from invdiff.priors.gmm import GaussianMixture
from invdiff.run import Method
from invdiff.samplers import sample_dds, sample_dps, sample_reddiff
from invdiff.schedules import sigmas_vp, vp_alphas_cumprod, vp_sigmas
from operators.base import Matrix, RealToComplex
from operators.cg import conjugate_gradient
from tests.samplers import seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

K, B0 = 2.0, -1.0  # data_range (0, 1) onto the network's (-1, 1): x_n = K x + B0
LOG_SIGMAS = vp_sigmas(vp_alphas_cumprod()).log()


def _sigma_of_t(t: torch.Tensor) -> torch.Tensor:
    """The inverse of the adapter's log-linear ``sigma_to_t``."""
    low = t.floor().long().clamp(0, 998)
    w = t - low
    return torch.exp(LOG_SIGMAS[low] + w * (LOG_SIGMAS[low + 1] - LOG_SIGMAS[low]))


class GaussianEps(nn.Module):
    """The exact ε-network of a Gaussian prior of the *network's* data; records its timesteps."""

    def __init__(self, prior: GaussianMixture):
        super().__init__()
        self.prior = prior
        self.timesteps: list[float] = []

    def forward(self, x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.timesteps.append(float(t.reshape(-1)[0]))
        s = _sigma_of_t(t.double()).to(x_vp.dtype).view(-1, *([1] * (x_vp.ndim - 1)))
        c = (1 + s.square()).rsqrt()
        x0 = self.prior(x_vp / c, s.reshape(-1))
        return (x_vp / c - x0) / s


def _network_problem(seed: int = 3, d: int = 6, m: int = 2, noise_std: float = 0.1):
    """A Gaussian prior of the network's data (mean 0, wide enough to leave [-1, 1]) behind
    ``data_range (0, 1)``, a random operator and one measurement of a prior draw, in the
    caller's units; also the measurement of the network's image ``y_n = K y + A(B0)``."""
    g = seeded(seed)
    L = 0.5 * torch.randn(d, d, generator=g, dtype=torch.float64)
    prior_n = GaussianMixture(torch.zeros(1, d, dtype=torch.float64), (L @ L.T + 0.3 * torch.eye(d))[None])
    eps_net = GaussianEps(prior_n)
    denoiser = VPDenoiser(eps_net, data_scale=K, data_shift=B0)
    A = torch.randn(m, d, generator=g, dtype=torch.float64)
    op = Matrix(A, (1, 1, d))
    x_true = (prior_n.sample(1, generator=g).reshape(1, 1, 1, d) - B0) / K
    y = op.A(x_true) + noise_std * torch.randn(1, m, generator=g, dtype=torch.float64)
    y_n = K * y + op.A(torch.full_like(x_true, B0))
    return denoiser, eps_net, op, y, y_n


def _timesteps(abar: list[float]) -> torch.Tensor:
    return torch.tensor([float(LOG_SIGMAS.exp().sub(math.sqrt((1 - a) / a)).abs().argmin()) for a in abar])


def test_vp_schedule_reaches_every_network_timestep_behind_a_data_range():
    denoiser, eps_net, op, y, _ = _network_problem()
    for sampler, steps, expected in (("dds", 50, 50), ("dps", 1000, 1000)):
        eps_net.timesteps.clear()
        method = Method.from_config(sampler, {"sampler": sampler, "steps": steps, "schedule": "vp"})
        sigmas = method.sigmas(denoiser)
        method.fn(denoiser, op, y, sigmas, noise_std=0.1, generator=seeded(0))
        t = torch.tensor(eps_net.timesteps)
        assert len(t) == expected
        assert t[0] == pytest.approx(999, abs=1e-6) and t[-1] == pytest.approx(0, abs=1e-6)
        assert (t - t.round()).abs().max() < 1e-6  # on the grid: nothing interpolated, nothing clamped
        assert bool((t[1:] < t[:-1]).all())
    # the official DDS grid: DDIM's uniform skip, 980 ... 0
    eps_net.timesteps.clear()
    sample_dds(denoiser, op, y, sigmas_vp(50, spacing="uniform", data_scale=K), noise_std=0.1, generator=seeded(0))
    assert torch.allclose(torch.tensor(eps_net.timesteps), torch.arange(980.0, -1, -20), atol=1e-6)


def _start(sigma0: float, shape, generator) -> torch.Tensor:
    """The VP state of our initial draw, ``sqrt(abar) (K sigma0 z + B0)`` (the official code starts at ``z``)."""
    sn = K * sigma0
    return (sn * torch.randn(shape, generator=generator, dtype=torch.float64) + B0) / math.sqrt(1 + sn**2)


def _official_dps(eps_net, op, y_n, sigmas, zeta, generator, shape):
    """``DPS2022/diffusion-posterior-sampling``: DDPM ``p_sample`` with ``clip_denoised``, then
    ``x_t -= scale * grad ||y - A(x0_hat)||``, in the network's VP units."""
    abar = [1 / (1 + (K * float(s)) ** 2) for s in sigmas]
    ts = _timesteps(abar[:-1])
    x = _start(float(sigmas[0]), shape, generator)
    for i in range(len(sigmas) - 1):
        a_t, a_prev = abar[i], abar[i + 1]
        x = x.detach().requires_grad_(True)
        eps = eps_net(x, ts[i].expand(shape[0]).double())
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
        beta = 1 - a_t / a_prev
        mean = beta * math.sqrt(a_prev) / (1 - a_t) * x0 + (1 - a_prev) * math.sqrt(1 - beta) / (1 - a_t) * x
        var = beta * (1 - a_prev) / (1 - a_t)
        sample = mean
        if var > 0:
            sample = sample + math.sqrt(var) * torch.randn(shape, generator=generator, dtype=torch.float64)
        norm = torch.linalg.vector_norm((y_n - op.A(x0)).flatten(1), dim=1).sum()
        (grad,) = torch.autograd.grad(norm, x)
        x = (sample - zeta * grad).detach()
    return (x - B0) / K


def test_dps_paper_matches_the_official_loop_with_clamp_and_data_range():
    denoiser, eps_net, op, y, y_n = _network_problem()
    denoiser.clip_range = (0.0, 1.0)  # as load_adm declares it for data_range (0, 1)
    ys, ys_n = y.expand(4, -1), y_n.expand(4, -1)
    sigmas = sigmas_vp(40, data_scale=K)
    ours, info = sample_dps(denoiser, op, ys, sigmas, noise_std=0.1, zeta=0.5, clip="prior", generator=seeded(9))
    ref = _official_dps(eps_net, op, ys_n, sigmas, 0.5, seeded(9), (4, 1, 1, 6))
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)
    assert info["clip"] == (0.0, 1.0)
    unclamped, _ = sample_dps(denoiser, op, ys, sigmas, noise_std=0.1, zeta=0.5, generator=seeded(9))
    assert (unclamped - ours).abs().max() > 1e-3  # the clamp acts on this prior


def _official_dds(eps_net, op, y_n, eta, gamma, cg_steps, generator, shape):
    """``HJ-harry/DDS`` ``solver_2d.py``: times ``range(0, 1000, 20)`` reversed, CG from ``x0_t``,
    the refined estimate as the state at ``t = 0``, one more step to ``t = -1``."""
    ac = vp_alphas_cumprod()
    times = list(range(0, 1000, 20))
    pairs = zip(reversed(times), reversed([-1] + times[:-1]))
    x = _start(float(vp_sigmas(ac)[980]) / K, shape, generator)
    ATy = op.AT(y_n)
    for i, j in pairs:
        at, at_next = float(ac[i]), (float(ac[j]) if j >= 0 else 1.0)
        et = eps_net(x, torch.full((shape[0],), float(i), dtype=torch.float64))
        x0_t = (x - et * math.sqrt(1 - at)) / math.sqrt(at)
        x0_hat, _ = conjugate_gradient(lambda v: v + gamma * op.normal(v), x0_t + gamma * ATy, x0_t,
                                       max_iter=cg_steps)
        c1, c2 = math.sqrt(1 - at_next) * eta, math.sqrt(1 - at_next) * math.sqrt(1 - eta**2)
        if j != 0:
            z = torch.randn(shape, generator=generator, dtype=torch.float64) if c1 > 0 else 0.0
            x = math.sqrt(at_next) * x0_hat + c1 * z + c2 * et
        else:
            x = x0_hat
    return (x - B0) / K


def test_dds_paper_matches_the_official_loop_with_data_range():
    denoiser, eps_net, op, y, y_n = _network_problem()
    ys, ys_n = y.expand(4, -1), y_n.expand(4, -1)
    method = Method.from_config("dds_paper", {"sampler": "dds", "steps": 50, "schedule": "vp",
                                              "schedule_params": {"spacing": "uniform"},
                                              "params": {"gamma": 1.0, "denoise_last": True}})
    ours, info = sample_dds(denoiser, op, ys, method.sigmas(denoiser), noise_std=0.1, generator=seeded(9),
                            **method.params)
    ref = _official_dds(eps_net, op, ys_n, 0.85, 1.0, 5, seeded(9), (4, 1, 1, 6))
    # the official state at t = 0 is the VP state x0_hat, ours the VE one: sqrt(abar_0) = 1 - 5e-5 apart
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-4)
    assert info["nfe"] == 50 and info["denoise_last"]


def _official_reddiff(eps_net, op, y_n, mu_n, sigmas, lam, lr, generator):
    """``NVlabs/RED-diff`` ``algos/reddiff.py`` (``awd``, ``sigma_x0 = 0``): Adam on the mean losses."""
    mu = mu_n.clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    for sigma in [float(s) for s in sigmas if s > 0]:
        sn = K * sigma
        at = 1 / (1 + sn**2)
        noise = torch.randn(mu.shape, generator=generator, dtype=torch.float64)
        xt = math.sqrt(at) * mu.detach() + math.sqrt(1 - at) * noise
        t = _timesteps([at]).expand(mu.shape[0]).double()
        et = eps_net(xt, t).detach()
        loss_obs = ((y_n - op.A(mu)) ** 2).mean() / 2
        loss_noise = ((et - noise) * mu).mean()
        loss = lam * math.sqrt(1 - at) / math.sqrt(at) * loss_noise + loss_obs
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (mu.detach() - B0) / K


def test_reddiff_paper_matches_the_official_loop_with_data_range():
    denoiser, eps_net, op, y, y_n = _network_problem()
    sigmas = sigmas_vp(20, spacing="uniform", data_scale=K)
    ours, info = sample_reddiff(denoiser, op, y, sigmas, noise_std=0.1, weighting="paper", lam=0.25, lr=0.25,
                                generator=seeded(9))
    mu0 = op.pinv(y, max_iter=30)
    ref = _official_reddiff(eps_net, op, y_n, K * mu0 + B0, sigmas, 0.25, 0.25, seeded(9))
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    assert info["weighting"] == "paper"


def test_reddiff_official_lambda_is_ours_times_ny_over_nx_s2():
    """Error 3: λ_ours = λ_official n_y / (n_x s²) gives the official iterates (Adam ignores scale)."""
    prior = GaussianMixture(torch.zeros(1, 6, dtype=torch.float64), torch.eye(6, dtype=torch.float64)[None])
    A = torch.randn(2, 6, generator=seeded(1), dtype=torch.float64)
    op, s = Matrix(A, (1, 1, 6)), 0.1
    y = torch.randn(1, 2, generator=seeded(2), dtype=torch.float64)
    sigmas = sigmas_vp(30)
    paper, _ = sample_reddiff(prior, op, y, sigmas, noise_std=s, weighting="paper", lam=0.25, lr=0.1,
                              generator=seeded(5))
    ours, _ = sample_reddiff(prior, op, y, sigmas, noise_std=s, lam=0.25 * 2 / (6 * s**2), lr=0.1,
                             generator=seeded(5))
    torch.testing.assert_close(ours, paper, rtol=1e-4, atol=1e-5)  # Adam's eps is not scale-free


def _complex_and_real(seed: int = 4, h: int = 3, m: int = 3, s: float = 0.2):
    """One problem as a complex operator on a 2-channel real image and as the equivalent real one."""
    g = seeded(seed)
    d = 2 * h
    L = 0.4 * torch.randn(d, d, generator=g, dtype=torch.float64)
    prior = GaussianMixture(0.3 * torch.randn(1, d, generator=g, dtype=torch.float64),
                            (L @ L.T + 0.3 * torch.eye(d))[None])
    Mc = torch.complex(torch.randn(m, h, generator=g, dtype=torch.float64),
                       torch.randn(m, h, generator=g, dtype=torch.float64))
    op_c = Matrix(Mc, (1, 1, h)) @ RealToComplex()
    R = torch.cat([torch.cat([Mc.real, -Mc.imag], 1), torch.cat([Mc.imag, Mc.real], 1)], 0)
    op_r = Matrix(R, (2, 1, h))
    x = prior.sample(1, generator=g).reshape(1, 2, 1, h)
    y_c = op_c.A(x) + s * torch.randn(1, m, generator=g, dtype=torch.complex128)
    y_r = torch.cat([y_c.real, y_c.imag], 1)
    return prior, op_c, y_c, op_r, y_r, s


@pytest.mark.parametrize("sampler", [sample_dds, sample_reddiff])
def test_complex_measurement_is_its_real_form_with_half_the_variance(sampler):
    prior, op_c, y_c, op_r, y_r, s = _complex_and_real()
    sigmas = sigmas_vp(25)
    x_c, _ = sampler(prior, op_c, y_c, sigmas, noise_std=s, generator=seeded(7))
    x_r, _ = sampler(prior, op_r, y_r, sigmas, noise_std=s / math.sqrt(2), generator=seeded(7))
    torch.testing.assert_close(x_c, x_r, rtol=1e-7, atol=1e-9)
