r"""MCGDiff against a transcription of the official loop (``gabrielvc/mcg_diff`` at 498a883,
``mcg_diff/particle_filter.py``), the exact Gaussian posterior in both linear-algebra forms,
noiseless data and its input guards.

The transcription keeps the official variable names and VP coordinates (``alphas_cumprod``,
``taus``, ``rescaled_observations``, ``previous_log_likelihood``, ``log_integration_constant``,
``Kprev``) in the SVD basis, with the observations' noise levels on the grid (where the official
``taus`` are exact), and the documented differences of :mod:`invdiff.samplers.mcgdiff`, each marked
``# ours:``: the first particles are the VE prior's and weighted by the first potential; a clamped
coordinate leaves the potentials without dividing its clamp out (``t > taus``, not ``t >= taus``);
systematic resampling with one uniform per step where the official draws ``Categorical``;
``gaussian_var`` per coordinate so that it is one variance in VE units; no noise drawn for the
deterministic last step.
"""

from __future__ import annotations

import pytest
import torch

from invdiff.samplers.mcgdiff import sample_mcgdiff
from invdiff.samplers.smc import effective_sample_size, systematic_resample
from invdiff.samplers.svd import svd_of
from invdiff.priors.gmm import GaussianMixture
from invdiff.schedules import sigmas_vp
from operators.base import Matrix
from tests.samplers import gaussian_problem, moment_errors, seeded
from tests.samplers.test_fps import IterativeMatrix, check_bad_input
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def gauss_loglik(x, mean, diag_std):
    return -1 / 2 * (torch.linalg.norm((x - mean[None, :]) / diag_std[None].clip(1e-10, 1e10), dim=-1) ** 2)


def _official_mcg_diff(prior, svd, ybar, s, sigma_list, taus_sigma, var_observation, kappa, P, d, generator,
                       record=None):
    """The official ``mcg_diff`` loop in VP spectral coordinates (module docstring)."""
    levels = sorted(sigma_list)  # timestep t has noise level levels[t]
    alphas_cumprod = torch.tensor([1 / (1 + v**2) for v in levels], dtype=torch.float64)
    timesteps = torch.arange(len(levels))
    dy = s.shape[0]
    # get_taus_from_singular_values: the grid step matched to each coordinate's noise
    distances = (var_observation * alphas_cumprod[None, timesteps]
                 - (1 - alphas_cumprod)[None, timesteps] * s[:, None] ** 2)
    taus = timesteps[distances.abs().argmin(dim=1)]
    assert [levels[int(t)] for t in taus] == taus_sigma
    gaussian_var = kappa * alphas_cumprod[taus]  # ours: one VE variance kappa for every coordinate
    rescaled_observations = (alphas_cumprod[taus] ** 0.5) * ybar

    def eps_net(particles, t):  # the exact eps-network of the prior, in spectral coordinates
        sigma = levels[t]
        x = svd.V((particles / alphas_cumprod[t] ** 0.5).reshape(P, 1, 1, d))
        return svd.Vt((x - prior(x, sigma)) / sigma).reshape(P, d)

    def predict(particles, t, t_prev, eta=1.0):  # generate_coefficients_ddim
        a_prev, a_t = alphas_cumprod[t_prev], alphas_cumprod[t]
        noise = eta * (((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)) ** 0.5
        coeff_sample = (a_prev / a_t) ** 0.5
        coeff_score = ((1 - a_prev - noise**2) ** 0.5) - coeff_sample * ((1 - a_t) ** 0.5)
        return coeff_sample * particles + coeff_score * eps_net(particles, t), noise

    def potential(particles, t, which):
        ratio = alphas_cumprod[t] / alphas_cumprod[taus[which]]
        return gauss_loglik(
            x=particles[:, which],
            mean=rescaled_observations[which] * (alphas_cumprod[t] / alphas_cumprod[taus[which]]) ** 0.5,
            diag_std=(1 - (1 - gaussian_var[which]) * ratio) ** 0.5,
        )

    T = len(levels) - 1
    z0 = torch.randn((P, 1, 1, d), generator=generator, dtype=torch.float64)
    # ours: the VE prior N(0, sigma_max^2), i.e. sqrt(1 - abar_T) z in VP, weighted by the first potential
    particles = (alphas_cumprod[T] ** 0.5) * svd.Vt(levels[T] * z0).reshape(P, d)
    log_weights = potential(particles, T, torch.where(T > taus)[0])
    for t, t_prev in zip(range(T, 0, -1), range(T - 1, -1, -1)):
        predicted_mean, predicted_noise = predict(particles, t, t_prev)
        if record is not None:
            record.append((svd.V((particles / alphas_cumprod[t] ** 0.5).reshape(P, 1, 1, d)), log_weights))
        active_coordinates_in_obs = torch.where(t_prev >= taus)[0]
        previously_active_coordinates_in_obs = torch.where(t > taus)[0]  # ours: t > taus (official: >=)
        inactive = torch.cat((torch.where(t_prev < taus)[0], torch.arange(dy, d)))
        previous_log_likelihood = potential(particles, t, previously_active_coordinates_in_obs)
        ratio = alphas_cumprod[t_prev] / alphas_cumprod[taus[active_coordinates_in_obs]]
        log_integration_constant = gauss_loglik(
            x=predicted_mean[:, active_coordinates_in_obs],
            mean=rescaled_observations[active_coordinates_in_obs] * ratio**0.5,
            diag_std=(predicted_noise**2 + 1 - (1 - gaussian_var[active_coordinates_in_obs]) * ratio) ** 0.5)
        log_weights = log_weights + log_integration_constant - previous_log_likelihood
        # ours: systematic resampling (threshold 1), one uniform per step
        u = torch.rand(1, generator=generator, dtype=torch.float64)
        ancestors = torch.arange(P)
        if bool(effective_sample_size(log_weights[None]) < P):
            ancestors = systematic_resample(log_weights[None], u)[0]
            log_weights = torch.zeros_like(log_weights)
        # ours: no noise drawn for the deterministic last step
        z = (svd.Vt(torch.randn((P, 1, 1, d), generator=generator, dtype=torch.float64)).reshape(P, d)
             if predicted_noise > 0 else torch.zeros(P, d, dtype=torch.float64))
        clamp = 1 - (1 - gaussian_var[active_coordinates_in_obs]) * ratio
        Kprev = predicted_noise**2 / (predicted_noise**2 + clamp)
        new_particles = particles.clone()
        new_particles[:, inactive] = z[:, inactive] * predicted_noise + predicted_mean[ancestors][:, inactive]
        new_particles[:, active_coordinates_in_obs] = (
            Kprev * rescaled_observations[active_coordinates_in_obs][None, :] * ratio**0.5
            + (1 - Kprev) * predicted_mean[ancestors][:, active_coordinates_in_obs]
            + (clamp * Kprev) ** 0.5 * z[:, active_coordinates_in_obs]
        )
        particles = new_particles
    # ours: the final resampling by the weights (the official script draws one particle by them)
    u = torch.rand(1, generator=generator, dtype=torch.float64)
    ancestors = systematic_resample(log_weights[None], u)[0]
    return svd.V(particles[ancestors].reshape(P, 1, 1, d))


def test_matches_the_official_loop():
    d, dy, P, sigma_y, kappa = 4, 2, 16, 0.3, 1e-3
    prior, _, _, _ = gaussian_problem(seed=5, d=d)
    sigma_list = [float(v) for v in sigmas_vp(12)]
    # singular values that put both observations' noise levels on the grid, where the official taus are exact
    taus_sigma = [sigma_list[-4], sigma_list[-8]]
    g = seeded(9)
    U, _, Vh = torch.linalg.svd(torch.randn(dy, d, generator=g, dtype=torch.float64), full_matrices=False)
    s = torch.tensor([sigma_y / v for v in taus_sigma], dtype=torch.float64)
    op = Matrix(U @ torch.diag(s) @ Vh, (1, 1, d))
    y = op.A(prior.sample(1, generator=g)) + sigma_y * torch.randn(1, dy, generator=g, dtype=torch.float64)
    svd = svd_of(op)
    ybar, std = svd.measurement(y, sigma_y)
    obs = std.expand_as(ybar)[0, :dy].tolist()
    for k, level in zip((-4, -8), obs):  # the grid holds the noise levels exactly
        sigma_list[k] = level
    _, info = sample_mcgdiff(prior, op, y, torch.tensor(sigma_list, dtype=torch.float64), noise_std=sigma_y,
                             generator=seeded(3), num_particles=P, ess_threshold=1.0, kappa=kappa)
    official = _official_mcg_diff(prior, svd, ybar[0, :dy], svd.s_like(ybar)[:dy], sigma_list, obs,
                                  sigma_y**2, kappa, P, d, seeded(3))
    assert info["linear_algebra"] == "svd" and int(info["resampled"].sum()) > 0
    torch.testing.assert_close(info["particles"][0], official, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("linear_algebra", ["svd", "cg"])
def test_gaussian_posterior_moments(linear_algebra):
    prior, op, y, post = gaussian_problem(seed=0)
    mean, cov = post.means[0], post.covs[0]
    errors = {}
    for N in (200, 2000):
        _, info = sample_mcgdiff(prior, op, y[None], sigmas_vp(100), noise_std=0.3, generator=seeded(1),
                                 num_particles=N, linear_algebra=linear_algebra)
        assert info["particles"].shape == (1, N, 1, 1, 6) and info["linear_algebra"] == linear_algebra
        errors[N] = moment_errors(info["particles"][0], mean, cov)
    assert errors[2000]["mahalanobis"] < 0.5 * errors[200]["mahalanobis"]
    assert errors[2000]["mahalanobis"] < 0.25
    assert errors[2000]["cov_rel"] < errors[200]["cov_rel"] and errors[2000]["cov_rel"] < 0.2
    assert 0.8 < errors[2000]["trace_ratio"] < 1.1  # DDPM steps drop a little spread at 100 steps


def test_auto_takes_the_svd_and_falls_back_to_cg():
    prior, op, y, _ = gaussian_problem(seed=1)
    assert sample_mcgdiff(prior, op, y[None], sigmas_vp(5), noise_std=0.3, generator=seeded(0),
                          num_particles=4)[1]["linear_algebra"] == "svd"
    assert sample_mcgdiff(prior, IterativeMatrix(op), y[None], sigmas_vp(5), noise_std=0.3,
                          generator=seeded(0), num_particles=4)[1]["linear_algebra"] == "cg"


def test_noiseless_observations_are_met():
    means = torch.tensor([[0.0, 0.0, 0.0], [3.0, 1.0, -2.0]], dtype=torch.float64)
    prior = GaussianMixture(means, torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone(), shape=(1, 1, 3))
    op = Matrix(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64), (1, 1, 3))
    y = torch.tensor([[2.5, -1.5]], dtype=torch.float64)
    _, info = sample_mcgdiff(prior, op, y, sigmas_vp(50), noise_std=0.0, generator=seeded(2),
                             num_particles=64, kappa=1e-6)
    observed = info["particles"][0].reshape(64, 3)[:, [0, 2]]
    torch.testing.assert_close(observed, y.expand(64, -1), rtol=0, atol=0.05)


@pytest.mark.parametrize("kwargs, match", [
    ({"noise_std": -0.1}, "noise_std"),
    ({"num_particles": 0}, "num_particles"),
    ({"ess_threshold": -0.5}, "ess_threshold"),
    ({"kappa": 0.0}, "kappa"),
    ({"linear_algebra": "qr"}, "linear_algebra"),
    ({"sigmas": torch.tensor([1.0, 1.0, 0.0])}, "sigmas"),
])
def test_bad_inputs_name_the_argument(kwargs, match):
    check_bad_input(sample_mcgdiff, kwargs, match)


def test_svd_and_noiseless_need_what_they_need():
    prior, op, y, _ = gaussian_problem(seed=0)
    with pytest.raises(ValueError, match="linear_algebra: 'svd' needs"):
        sample_mcgdiff(prior, IterativeMatrix(op), y[None], sigmas_vp(5), noise_std=0.3, generator=seeded(0),
                       linear_algebra="svd")
    with pytest.raises(ValueError, match="noise_std: the conjugate-gradient form needs"):
        sample_mcgdiff(prior, op, y[None], sigmas_vp(5), noise_std=0.0, generator=seeded(0),
                       linear_algebra="cg")


def test_complex_measurements_are_their_real_twin():
    """``Matrix(M) @ RealToComplex()`` with circular noise of E|n|^2 = s^2 runs the same filter as its real
    twin at noise std s / sqrt 2 (same spectral coordinates, same draws)."""
    from tests.samplers.test_pigdm import complex_and_twin

    prior, op_c, y_c, op_r, y_r, s_r = complex_and_twin()
    sigmas = sigmas_vp(20)
    _, info_c = sample_mcgdiff(prior, op_c, y_c, sigmas, noise_std=0.3, generator=seeded(1), num_particles=8)
    _, info_r = sample_mcgdiff(prior, op_r, y_r, sigmas, noise_std=s_r, generator=seeded(1), num_particles=8)
    assert info_c["linear_algebra"] == info_r["linear_algebra"] == "svd"
    torch.testing.assert_close(info_c["particles"], info_r["particles"], rtol=1e-7, atol=1e-7)
