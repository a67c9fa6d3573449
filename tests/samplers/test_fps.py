r"""FPS-SMC against the official update (``ZehaoDou-official/FPS-SMC-2023`` at 008e7f7), the exact
Gaussian posterior, the conjugate-gradient path and its input guards.

The official code works in VP coordinates (``alphas_cumprod``, ``c_rate``, ``variance_diff``,
``posterior_variance``, ``ex_values``) with an SVD (``get_mean``: :math:`(I + A^T A / t)^{-1} v`,
``get_noise``: covariance :math:`(I + A^T A / t)^{-1}`); ours in VE units, :math:`x = x^{vp} /
\sqrt{\bar\alpha}`. The transcription pairs the measurement of level :math:`t-1` with the new
state :math:`x_{t-1}` (the official pairs ``ys[t]`` and the variance :math:`\sigma^2\bar\alpha_t`
of the level above, a one-level offset that the module docstring lists).
"""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.samplers.fps import next_measurement, predictive_log_likelihood, prior_step, sample_fps
from invdiff.samplers.linear import sample_gaussian_posterior
from invdiff.schedules import sigmas_vp
from operators.base import LinearOperator
from operators.nonlinear import PhaseRetrieval
from tests.samplers import gaussian_problem, moment_errors, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


class IterativeMatrix(LinearOperator):
    """A dense matrix without a closed-form ``solve_normal``: conjugate gradient, as multi-coil MRI and CT."""

    def __init__(self, op):
        self.op = op

    def A(self, x):
        return self.op.A(x)

    def AT(self, y):
        return self.op.AT(y)


def _svd_functions(A: torch.Tensor):
    """The official ``H_functions`` pieces of a dense ``A``: ``get_mean``, ``get_noise``, ``transpose``."""
    _, s, Vh = torch.linalg.svd(A, full_matrices=True)
    singulars = torch.zeros(A.shape[1], dtype=A.dtype)
    singulars[: s.shape[0]] = s

    def get_mean(vec, t):  # (I + A'A/t)^{-1} vec
        return ((t / (t + singulars**2)) * (vec @ Vh.T)) @ Vh

    def get_noise(vec, t):  # noise with covariance (I + A'A/t)^{-1}, vec white in spectral coordinates
        return (torch.sqrt(t / (t + singulars**2)) * vec) @ Vh

    return get_mean, get_noise


def test_one_step_matches_the_official_update():
    prior, op, y, _ = gaussian_problem(seed=3, d=5, m=3, noise_std=0.3)
    A, sigma_y, c_rate, M = op.matrix, 0.3, 0.95, 6
    get_mean, get_noise = _svd_functions(A)
    g = seeded(0)
    # The official schedule: 50 linear-beta steps; step t -> t - 1.
    betas = torch.linspace(1e-4 * 20, 0.02 * 20, 50, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    t = 20
    abar, abar_prev = float(alphas_cumprod[t]), float(alphas_cumprod[t - 1])
    sigma, sigma_prev = math.sqrt((1 - abar) / abar), math.sqrt((1 - abar_prev) / abar_prev)
    x_vp = torch.randn(M, 5, generator=g, dtype=torch.float64)
    x = x_vp / math.sqrt(abar)  # ours, VE
    x0_hat = prior(x.reshape(M, 1, 1, 5), sigma).reshape(M, 5)
    model_output = (x - x0_hat) / sigma  # the exact eps-network of the Gaussian prior

    # 1. EpsilonXMeanProcessor.get_mean_and_xstart (no clip: the prior has no range).
    pred_xstart = math.sqrt(1 / abar) * x_vp - math.sqrt(1 / abar - 1) * model_output
    mean_back = (math.sqrt(abar_prev) * pred_xstart
                 + math.sqrt(1 - abar_prev) * math.sqrt(1 - c_rate) * model_output)
    c1, c2 = prior_step(sigma, sigma_prev, c_rate)
    m = x0_hat + (c2 / sigma) * (x - x0_hat)
    torch.testing.assert_close(m * math.sqrt(abar_prev), mean_back)

    # 2. The backward y-sequence step (coef_1..coef_4 of p_sample_loop), the same noise.
    y_t_ve = y + sigma * (A @ torch.randn(5, generator=g, dtype=torch.float64))
    noise = torch.randn(5, generator=g, dtype=torch.float64)
    coef_1 = math.sqrt((1 - c_rate) * (1.0 - abar_prev) / (1.0 - abar))
    coef_2, coef_3 = math.sqrt(abar_prev), math.sqrt(abar)
    coef_4 = math.sqrt(c_rate) * math.sqrt(1.0 - abar_prev)
    new_y = coef_2 * y + coef_1 * (math.sqrt(abar) * y_t_ve - coef_3 * y) + coef_4 * (A @ noise)
    ours_y = next_measurement(y[None], y_t_ve[None], sigma, c1, c2, (A @ noise)[None])
    torch.testing.assert_close(ours_y[0] * math.sqrt(abar_prev), new_y)
    Y_ve = ours_y.expand(M, -1)
    Y = math.sqrt(abar_prev) * Y_ve

    # 3. p_mean_variance's conditioned mean and DDIM.p_sample's draw and weights.
    variance_diff = abar_prev * sigma_y**2  # of the level the new state lives at (module docstring)
    posterior_variance = c_rate * (1 - abar_prev)
    ex_values = variance_diff / posterior_variance
    model_mean = get_mean(mean_back + (1 / ex_values) * (Y @ A), ex_values)
    _, ours_mean = sample_gaussian_posterior(op, Y_ve, m.reshape(M, 1, 1, 5), c1**2, sigma_y**2,
                                             generator=seeded(1))
    torch.testing.assert_close(ours_mean.reshape(M, 5) * math.sqrt(abar_prev), model_mean)
    c11, a1, model_variance = math.sqrt(posterior_variance), variance_diff, variance_diff
    samples = model_mean + get_noise(c11 * torch.randn(M, 5, generator=g, dtype=torch.float64), ex_values)
    prob_y = -(Y - samples @ A.T).square().sum(1) / (2 * model_variance)
    prob_x = -(samples - mean_back).square().sum(1) / (2 * c11 * c11)
    prob_prev = (-(samples - model_mean).square().sum(1) / (2 * c11 * c11)
                 - ((samples - model_mean) @ A.T).square().sum(1) / (2 * a1))
    prob = prob_y + prob_x - prob_prev
    residual = Y_ve - op.A(m.reshape(M, 1, 1, 5))
    ours_w = predictive_log_likelihood(op, residual, c1**2, sigma_y**2, max_iter=100, tol=1e-6)
    # the same weights up to one constant: the ratio does not depend on the draw
    torch.testing.assert_close(prob - prob[0], ours_w - ours_w[0])


def test_gaussian_posterior_moments():
    prior, op, y, post = gaussian_problem(seed=0)
    mean, cov = post.means[0], post.covs[0]
    errors = {}
    for N in (200, 2000):
        _, info = sample_fps(prior, op, y[None], sigmas_vp(100), noise_std=0.3, generator=seeded(1),
                             num_particles=N)
        assert info["particles"].shape == (1, N, 1, 1, 6) and info["linear_algebra"] == "closed form"
        errors[N] = moment_errors(info["particles"][0], mean, cov)
    assert errors[2000]["cov_rel"] < 0.6 * errors[200]["cov_rel"] and errors[2000]["cov_rel"] < 0.2
    assert 0.8 < errors[2000]["trace_ratio"] < 1.2
    # One run's particles share one diffused measurement path, which shifts their mean in the
    # measured directions by a fraction of a posterior std; pooled over paths it vanishes.
    assert errors[2000]["max_z"] < 0.35
    runs = [sample_fps(prior, op, y[None], sigmas_vp(100), noise_std=0.3, generator=seeded(s),
                       num_particles=400)[1] for s in range(6)]
    pooled = moment_errors(torch.cat([r["particles"][0] for r in runs]), mean, cov)
    assert pooled["mahalanobis"] < 0.35 and pooled["max_z"] < 0.2, pooled


def test_official_c_rate_drops_spread():
    prior, op, y, post = gaussian_problem(seed=0)
    _, info = sample_fps(prior, op, y[None], sigmas_vp(100), noise_std=0.3, generator=seeded(1),
                         num_particles=1000, c_rate=0.95)
    assert moment_errors(info["particles"][0], post.means[0], post.covs[0])["trace_ratio"] < 0.75
    assert info["c_rate"] == 0.95


def test_conjugate_gradient_path_matches_closed_form():
    prior, op, y, _ = gaussian_problem(seed=1)
    ys = y[None].expand(2, -1).clone()
    x1, i1 = sample_fps(prior, op, ys, sigmas_vp(20), noise_std=0.3, generator=seeded(4), num_particles=8)
    x2, i2 = sample_fps(prior, IterativeMatrix(op), ys, sigmas_vp(20), noise_std=0.3, generator=seeded(4),
                        num_particles=8, tol=1e-12)
    assert i2["linear_algebra"] == "conjugate gradient"
    torch.testing.assert_close(x1, x2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(i1["log_weights"], i2["log_weights"], rtol=1e-6, atol=1e-6)


def test_single_particle_is_fps_without_smc():
    prior, op, y, _ = gaussian_problem(seed=2)
    x, info = sample_fps(prior, op, y[None].expand(3, -1), sigmas_vp(10), noise_std=0.3, generator=seeded(0),
                         num_particles=1)
    assert x.shape == (3, 1, 1, 6) and info["particles"].shape == (3, 1, 1, 1, 6) and info["nfe"] == 10
    assert int(info["resampled"].sum()) == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"noise_std": 0.0}, "noise_std"),
    ({"num_particles": 0}, "num_particles"),
    ({"num_particles": 2.5}, "num_particles"),
    ({"ess_threshold": 1.5}, "ess_threshold"),
    ({"c_rate": 1.0}, "c_rate"),
    ({"max_iter": 0}, "max_iter"),
    ({"sigmas": torch.tensor([1.0, 2.0, 0.0])}, "sigmas"),
])
def test_bad_inputs_name_the_argument(kwargs, match):
    check_bad_input(sample_fps, kwargs, match)


def check_bad_input(sampler, kwargs, match):
    """``sampler`` on a small problem with ``kwargs`` changed raises a ``ValueError`` matching ``match``."""
    prior, op, y, _ = gaussian_problem(seed=0)
    args = {"noise_std": 0.3, "num_particles": 4, "sigmas": sigmas_vp(5), **kwargs}
    with pytest.raises(ValueError, match=match):
        sampler(prior, op, y[None], args.pop("sigmas"), generator=seeded(0), **args)


def test_nonlinear_operator_is_refused():
    prior, _, _, _ = gaussian_problem(seed=0)
    with pytest.raises(ValueError, match="op: expected a LinearOperator"):
        sample_fps(prior, PhaseRetrieval(), torch.ones(1, 1, 1, 6), sigmas_vp(5), noise_std=0.1,
                   generator=seeded(0), shape=(1, 1, 1, 6))


def test_complex_measurements_match_the_real_twin_posterior():
    """Circular complex noise of E|n|^2 = s^2 is the real twin's noise of std s / sqrt 2 per part: both
    problems' particles spread like the twin's exact posterior (their draws differ)."""
    from tests.samplers.test_pigdm import complex_and_twin

    prior, op_c, y_c, op_r, y_r, s_r = complex_and_twin()
    post = prior.posterior(op_r.matrix, y_r[0], s_r)
    for op, y, s in [(op_c, y_c, 0.3), (op_r, y_r, s_r)]:
        _, info = sample_fps(prior, op, y[:1], sigmas_vp(50), noise_std=s, generator=seeded(1),
                             num_particles=1000)
        errors = moment_errors(info["particles"][0], post.means[0], post.covs[0])
        assert errors["cov_rel"] < 0.35 and 0.75 < errors["trace_ratio"] < 1.2, errors
        assert errors["max_z"] < 0.35, errors
