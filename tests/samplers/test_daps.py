"""DAPS: against a transcription of the paper's code (legacy branch), the Langevin target, guards."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.samplers import SAMPLERS, sample_daps
from invdiff.samplers.daps import ode_sigmas
from invdiff.schedules import sigmas_karras, sigmas_vp
from operators.base import Operator
from tests.samplers import gaussian_problem, seeded
from tests.samplers.test_pigdm import complex_and_twin
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def _batch(y: torch.Tensor, B: int = 3) -> torch.Tensor:
    return y.reshape(1, -1).expand(B, -1).clone()


def poly_scheduler(num_steps, sigma_max, sigma_min, sigma_final=0.0, p=7):
    """``Scheduler(schedule='linear', timestep='poly-7')`` of ``sampler.py`` (legacy): sigma_steps
    and factor_steps = 2 sigma(t) sigma'(t) (t_i - t_{i+1})."""
    steps = torch.linspace(0, 1, num_steps, dtype=torch.float64).tolist()
    time_steps = [(sigma_max ** (1 / p) + r * (sigma_min ** (1 / p) - sigma_max ** (1 / p))) ** p for r in steps]
    time_steps.append(sigma_final)
    sigma_steps = time_steps
    factor_steps = [max(2 * time_steps[i] * 1 * (time_steps[i] - time_steps[i + 1]), 0) for i in range(num_steps)]
    return sigma_steps, factor_steps


def legacy_daps(score, operator, measurement, x_start, num_steps, ode_steps, lgvd, eps, fwd):
    """``DAPS.sample`` of zhangbingliang2019/DAPS, branch ``legacy`` at ``25471a8`` (``sampler.py``:
    ``Scheduler``, ``DiffusionSampler._euler`` with ``SDE=False``, ``LangevinDynamics.sample`` as
    SGD then noise), in its variable names, in the network's units; ``eps[step][j]`` and
    ``fwd[step]`` are the draws of ``torch.randn_like``."""
    sigma_steps, _ = poly_scheduler(num_steps, 10.0, 0.1)
    xt = x_start
    for step in range(num_steps):
        sigma = sigma_steps[step]
        # 1. reverse diffusion
        d_sigma, d_factor = poly_scheduler(ode_steps, sigma, 0.01)
        x = xt
        for k in range(ode_steps):
            x = x + d_factor[k] * score(x, d_sigma[k]) * 0.5
        x0hat = x
        # 2. langevin dynamics
        ratio = step / num_steps
        lr = (1 + ratio * (lgvd["lr_min_ratio"] - 1)) * lgvd["lr"]
        x = x0hat.clone().detach().requires_grad_(True)
        for j in range(lgvd["num_steps"]):
            loss = ((operator(x) - measurement) ** 2).flatten(1).sum(-1).sum() / (2 * lgvd["tau"] ** 2)
            loss = loss + ((x - x0hat.detach()) ** 2).sum() / (2 * sigma**2)
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = x - lr * grad + math.sqrt(2 * lr) * eps[step][j]
            x.requires_grad_(True)
        x0y = x.detach()
        # 3. forward diffusion
        xt = x0y + fwd[step] * sigma_steps[step + 1]
    return xt


@pytest.mark.parametrize("k, b", [(1.0, 0.0), (2.0, -1.0)])
def test_matches_the_legacy_code(k, b):
    """Same random numbers; the network sees x_n = k x + b (k = 2, b = -1: images in [0, 1] under a
    [-1, 1] network), lr and tau are the network's, and the annealing grid is sigmas_karras."""
    prior, op, y, _ = gaussian_problem(seed=1, d=6, m=3, noise_std=0.1)
    prior.data_scale = k
    ys = _batch(y)
    N, ode_steps, lgvd = 6, 3, {"num_steps": 15, "lr": 2e-3, "tau": 0.3, "lr_min_ratio": 0.1}
    sigmas = sigmas_karras(N, 0.1, 10.0) / k
    x, info = sample_daps(
        prior, op, ys, sigmas, noise_std=0.1, generator=seeded(2), ode_steps=ode_steps,
        langevin_steps=lgvd["num_steps"], lr=lgvd["lr"], tau=lgvd["tau"], lr_min_ratio=lgvd["lr_min_ratio"],
    )
    g = seeded(2)
    draw = lambda: torch.randn(x.shape, generator=g, dtype=torch.float64)  # noqa: E731
    z0 = draw()
    eps, fwd = [], []
    for step in range(N):
        eps.append([draw() for _ in range(lgvd["num_steps"])])
        fwd.append(draw() if step < N - 1 else torch.zeros(x.shape, dtype=torch.float64))
    A = op.matrix
    score = lambda x_n, s_n: (k * prior((x_n - b) / k, s_n / k) + b - x_n) / s_n**2  # noqa: E731
    operator = lambda x_n: x_n.reshape(x_n.shape[0], -1) @ A.T  # noqa: E731
    measurement = k * ys + b * A.sum(1)
    reference = legacy_daps(score, operator, measurement, b + 10.0 * z0, N, ode_steps, lgvd, eps, fwd)
    torch.testing.assert_close(x, (reference - b) / k, rtol=1e-9, atol=1e-9)
    assert info["nfe"] == N * ode_steps and info["langevin_steps_total"] == N * lgvd["num_steps"]
    assert info["tau"] == pytest.approx(0.3 / k)
    assert sigmas_karras(N, 0.1, 10.0).tolist() == pytest.approx(poly_scheduler(N, 10.0, 0.1)[0])


def test_ode_levels_are_the_official_inner_grid():
    assert ode_sigmas(5.0, 5, 0.01) == pytest.approx(poly_scheduler(5, 5.0, 0.01)[0])
    assert ode_sigmas(5.0, 1, 0.01) == [5.0, 0.0]  # one step: the denoiser at sigma


class _NonlinearMatrix(Operator):
    """The same matrix seen as a nonlinear operator (only ``A``): DAPS differentiates it by autograd."""

    def __init__(self, matrix):
        self.matrix = matrix

    def A(self, x):
        return x.reshape(x.shape[0], -1) @ self.matrix.T


def test_nonlinear_path_equals_the_linear_one():
    prior, op, y, _ = gaussian_problem(seed=3, d=6, m=3, noise_std=0.2)
    ys = _batch(y)
    kw = dict(noise_std=0.2, ode_steps=2, langevin_steps=10, lr=1e-3)
    x_lin, _ = sample_daps(prior, op, ys, sigmas_karras(4, 0.1, 10.0), generator=seeded(1), **kw)
    x_nl, _ = sample_daps(
        prior, _NonlinearMatrix(op.matrix), ys, sigmas_karras(4, 0.1, 10.0), generator=seeded(1), shape=x_lin.shape, **kw
    )
    torch.testing.assert_close(x_nl, x_lin, rtol=1e-10, atol=1e-10)


def test_langevin_samples_its_gaussian_target():
    """One annealing level (sigma -> 0): the Langevin chain targets N(x0_hat, sigma^2 I) times the
    likelihood N(y; A x0, tau^2 I), a Gaussian with precision I/sigma^2 + A^T A / tau^2; with many
    small steps the output (centred on each chain's exact target mean) has that covariance."""
    prior, op, y, _ = gaussian_problem(seed=4, d=6, m=3, noise_std=0.5)
    A, B, sigma, tau = op.matrix, 3000, 0.7, 0.5
    seen = []
    x, _ = sample_daps(
        prior, op, _batch(y, B), torch.tensor([sigma, 0.0], dtype=torch.float64), noise_std=tau,
        generator=seeded(0), ode_steps=1, langevin_steps=1000, lr=2e-3, lr_min_ratio=1.0, tau=None,
        callback=seen.append,
    )
    precision = torch.eye(6, dtype=torch.float64) / sigma**2 + A.T @ A / tau**2
    cov = torch.linalg.inv(precision)
    x0_hat = seen[0]["x0_hat"].reshape(B, 6)
    mean = (x0_hat / sigma**2 + (y @ A / tau**2)) @ cov
    centred = x.reshape(B, 6) - mean
    assert (centred.mean(0).abs() / cov.diagonal().sqrt()).max() < 0.12
    assert float((torch.cov(centred.T) - cov).norm() / cov.norm()) < 0.1


def test_lr_normalise_divides_by_the_operator_norm():
    """A large operator norm makes the official step diverge; lr_normalise divides it by ||A^H A||."""
    prior, op, y, _ = gaussian_problem(seed=0, d=6, m=3, noise_std=0.2)
    big = type(op)(30.0 * op.matrix, (1, 1, 6))
    ys = _batch(30.0 * y)
    kw = dict(noise_std=0.2, ode_steps=1, langevin_steps=200, lr=1e-3, tau=0.2)
    with pytest.raises(FloatingPointError, match="sample_daps: non-finite"):
        sample_daps(prior, big, ys, sigmas_karras(3, 0.1, 10.0), generator=seeded(0), **kw)
    x, info = sample_daps(prior, big, ys, sigmas_karras(3, 0.1, 10.0), generator=seeded(0), lr_normalise=True, **kw)
    assert info["lr_divisor"] == pytest.approx(float(torch.linalg.matrix_norm(big.matrix, 2)) ** 2, rel=1e-3)
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="sample_daps: lr_normalise"):
        sample_daps(prior, _NonlinearMatrix(op.matrix), ys, sigmas_vp(3), generator=seeded(0), lr_normalise=True,
                    shape=(3, 1, 1, 6), **kw)


def test_complex_measurements_are_their_real_twin():
    """tau = None: the likelihood of circular complex noise, E|n|^2 = s^2, is the real twin's at s / sqrt 2."""
    prior, op_c, y_c, op_r, y_r, s_r = complex_and_twin()
    kw = dict(ode_steps=2, langevin_steps=10, lr=1e-3, tau=None)
    x_c, _ = sample_daps(prior, op_c, y_c, sigmas_karras(4, 0.1, 10.0), noise_std=0.3, generator=seeded(1), **kw)
    x_r, _ = sample_daps(prior, op_r, y_r, sigmas_karras(4, 0.1, 10.0), noise_std=s_r, generator=seeded(1), **kw)
    torch.testing.assert_close(x_c, x_r, rtol=1e-8, atol=1e-8)


def test_registered_and_bad_inputs_name_the_argument():
    assert SAMPLERS["daps"] is sample_daps
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    run = lambda **kw: sample_daps(prior, op, ys, sigmas_vp(3), generator=seeded(0), **{"noise_std": 0.1, **kw})  # noqa: E731
    for kw, name in [({"ode_steps": 0}, "ode_steps"), ({"langevin_steps": -1}, "langevin_steps"),
                     ({"lr": -1e-4}, "lr"), ({"lr_min_ratio": 0.0}, "lr_min_ratio"), ({"tau": 0.0}, "tau"),
                     ({"ode_sigma_min": math.nan}, "ode_sigma_min"), ({"noise_std": -0.1}, "noise_std"),
                     ({"noise_std": 0.0}, "tau")]:
        with pytest.raises(ValueError, match=f"sample_daps: {name}"):
            run(**kw)
