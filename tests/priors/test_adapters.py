"""Adapters against exact Gaussian-mixture denoisers: a VP network built from the mixture's
exact score, adapted back, must give the mixture's own D(x, sigma)."""

import math

import pytest
import torch
from torch import nn

from invdiff.priors.adapters import EDMDenoiser, ScaledDenoiser, VPDenoiser, range_affine
from invdiff.priors.gmm import GaussianMixture
from invdiff.schedules import vp_alphas_cumprod, vp_sigmas

SHAPE = (2, 2, 2)


def _mixture(seed=0, K=3):
    g = torch.Generator().manual_seed(seed)
    d = math.prod(SHAPE)
    means = torch.randn(K, d, generator=g, dtype=torch.float64)
    L = 0.4 * torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = L @ L.transpose(1, 2) + 0.05 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(means, covs, torch.rand(K, generator=g, dtype=torch.float64) + 0.2, shape=SHAPE)


class AnalyticVP(nn.Module):
    """A VP network ``model(x_vp, t)`` from a mixture's exact posterior mean.

    ``sigma(t)`` interpolates ``log sigma_t`` linearly between integer timesteps, so fractional
    timesteps mean the noise levels in between.
    """

    def __init__(self, gmm, alphas_cumprod, prediction, learned_variance=False):
        super().__init__()
        self.gmm, self.prediction, self.learned_variance = gmm, prediction, learned_variance
        self.log_sigmas = vp_sigmas(alphas_cumprod).log()
        self.seen_t = None

    def forward(self, x_vp, t):
        self.seen_t = t
        i = t.floor().long().clamp(0, self.log_sigmas.shape[0] - 2)
        w = (t.double() - i).view(-1, 1, 1, 1)
        s = torch.exp(
            (1 - w) * self.log_sigmas[i].view(-1, 1, 1, 1) + w * self.log_sigmas[i + 1].view(-1, 1, 1, 1)
        )
        x = x_vp * (1 + s.square()).sqrt()
        x0 = self.gmm(x, s.flatten())
        eps = (x - x0) / s
        a, b = (1 + s.square()).rsqrt(), s * (1 + s.square()).rsqrt()
        out = {"eps": eps, "x0": x0, "v": a * eps - b * x0}[self.prediction]
        return torch.cat([out, torch.full_like(out, 1e3)], dim=1) if self.learned_variance else out


def _noisy(gmm, sigma, generator, n=4):
    x0 = gmm.sample(n, generator=generator)
    return x0 + torch.as_tensor(sigma, dtype=torch.float64).view(-1, 1, 1, 1) * torch.randn(
        x0.shape, generator=generator, dtype=torch.float64
    )


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("learned_variance", [False, True])
def test_vp_on_grid_matches_mixture(prediction, learned_variance, generator):
    gmm, ac = _mixture(), vp_alphas_cumprod()
    vp = VPDenoiser(AnalyticVP(gmm, ac, prediction, learned_variance), ac, prediction)
    steps = torch.tensor([0, 1, 250, 998])
    sigma = vp_sigmas(ac)[steps]
    x = _noisy(gmm, sigma, generator)
    out = vp(x, sigma)
    torch.testing.assert_close(vp.model.seen_t, steps.double(), rtol=0, atol=0)
    torch.testing.assert_close(out, gmm(x, sigma), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_vp_off_grid_interpolates_timestep(prediction, generator):
    gmm, ac = _mixture(), vp_alphas_cumprod()
    sigmas = vp_sigmas(ac)
    vp = VPDenoiser(AnalyticVP(gmm, ac, prediction), ac, prediction)
    # Geometric midpoints between timesteps 10|11 and 600|601 and a quarter of the way 3 -> 4.
    sigma = torch.stack(
        [
            (sigmas[10] * sigmas[11]).sqrt(),
            (sigmas[600] * sigmas[601]).sqrt(),
            sigmas[3] ** 0.75 * sigmas[4] ** 0.25,
            torch.tensor(0.5, dtype=torch.float64),
        ]
    )
    x = _noisy(gmm, sigma, generator)
    out = vp(x, sigma)
    t = vp.model.seen_t
    torch.testing.assert_close(t[:3], torch.tensor([10.5, 600.5, 3.25], dtype=torch.float64))
    assert sigmas[t[3].floor().long()] < 0.5 < sigmas[t[3].ceil().long()]
    torch.testing.assert_close(out, gmm(x, sigma), rtol=1e-6, atol=1e-6)


def test_vp_sigma_to_t_clamps_and_nearest():
    ac = vp_alphas_cumprod()
    sigmas = vp_sigmas(ac)
    vp = VPDenoiser(nn.Identity(), ac)
    t = vp.sigma_to_t(torch.tensor([0.0, sigmas[0] / 2, sigmas[-1] * 2, sigmas[-1]], dtype=torch.float64))
    torch.testing.assert_close(t, torch.tensor([0.0, 0.0, 999.0, 999.0], dtype=torch.float64))
    nearest = VPDenoiser(nn.Identity(), ac, timesteps="nearest")
    mid = torch.stack([sigmas[10] ** 0.6 * sigmas[11] ** 0.4, sigmas[10] ** 0.4 * sigmas[11] ** 0.6])
    torch.testing.assert_close(nearest.sigma_to_t(mid), torch.tensor([10.0, 11.0], dtype=torch.float64))
    assert vp.sigma_min == pytest.approx(float(sigmas[0])) and vp.sigma_max == pytest.approx(
        float(sigmas[-1])
    )


def test_vp_eps_far_outside_grid_uses_true_sigma(generator):
    """Below the grid the network sees t = 0, but x0 = x - sigma * eps still uses the true sigma."""
    gmm, ac = _mixture(), vp_alphas_cumprod()
    vp = VPDenoiser(AnalyticVP(gmm, ac, "eps"), ac, "eps")
    x = _noisy(gmm, 0.0, generator)
    torch.testing.assert_close(vp(x, 0.0), x, rtol=0, atol=0)


def test_vp_data_range(generator):
    """A [-1, 1] network serving [0, 1] data: D(x, s) = (D_net(2x - 1, 2s) + 1) / 2."""
    gmm, ac = _mixture(), vp_alphas_cumprod()
    scale, shift = range_affine((0.0, 1.0), (-1.0, 1.0))
    assert (scale, shift) == (2.0, -1.0)
    vp = VPDenoiser(AnalyticVP(gmm, ac, "eps"), ac, "eps", data_scale=scale, data_shift=shift)
    sigma = vp_sigmas(ac)[[5, 400]] / 2
    x = (_noisy(gmm, 2 * sigma, generator, n=2) + 1) / 2
    torch.testing.assert_close(vp(x, sigma), (gmm(2 * x - 1, 2 * sigma) + 1) / 2, rtol=1e-6, atol=1e-6)
    assert vp.sigma_max == pytest.approx(float(vp_sigmas(ac)[-1]) / 2)


def test_vp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="prediction"):
        VPDenoiser(nn.Identity(), prediction="score")
    with pytest.raises(ValueError, match="alphas_cumprod"):
        VPDenoiser(nn.Identity(), torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="timesteps"):
        VPDenoiser(nn.Identity(), timesteps="round")
    with pytest.raises(ValueError, match="data_range"):
        range_affine((1.0, 0.0))
    vp = VPDenoiser(lambda x, t: torch.cat([x, x, x], dim=1))
    with pytest.raises(ValueError, match="output channels"):
        vp(torch.zeros(1, 2, 4, 4), 1.0)


def _optimal_F(gmm, sigma_data):
    """The F that makes EDM preconditioning exact for the mixture: F = (D - c_skip x) / c_out."""

    def F(x_in, c_noise):
        s = torch.exp(4 * c_noise).view(-1, 1, 1, 1)
        x = x_in * (s.square() + sigma_data**2).sqrt()
        c_skip = sigma_data**2 / (s.square() + sigma_data**2)
        c_out = s * sigma_data / (s.square() + sigma_data**2).sqrt()
        return (gmm(x, s.flatten()) - c_skip * x) / c_out

    return F


@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
def test_edm_with_optimal_F_matches_mixture(sigma_data, generator):
    gmm = _mixture()
    edm = EDMDenoiser(_optimal_F(gmm, sigma_data), sigma_data)
    sigma = torch.tensor([0.002, 0.3, 2.0, 80.0], dtype=torch.float64)
    x = _noisy(gmm, sigma, generator)
    torch.testing.assert_close(edm(x, sigma), gmm(x, sigma), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(edm(x[:1], 0.7), gmm(x[:1], 0.7), rtol=1e-8, atol=1e-8)


def test_edm_and_scaled_data_range(generator):
    gmm = _mixture()
    sigma = torch.tensor([0.05, 1.0], dtype=torch.float64)
    x = (_noisy(gmm, 2 * sigma, generator, n=2) + 1) / 2
    expected = (gmm(2 * x - 1, 2 * sigma) + 1) / 2
    edm = EDMDenoiser(_optimal_F(gmm, 0.5), 0.5, data_scale=2.0, data_shift=-1.0)
    torch.testing.assert_close(edm(x, sigma), expected, rtol=1e-8, atol=1e-8)
    scaled = ScaledDenoiser(gmm, data_scale=2.0, data_shift=-1.0, sigma_max=80.0)
    torch.testing.assert_close(scaled(x, sigma), expected, rtol=1e-12, atol=1e-12)
    assert scaled.sigma_max == 40.0 and edm.sigma_min == 0.001


def test_adapter_config_rebuilds_the_same_denoiser(generator):
    gmm, ac = _mixture(), vp_alphas_cumprod(500, 1e-4, 0.03)
    model = AnalyticVP(gmm, ac, "v")
    vp = VPDenoiser(model, ac, "v", data_scale=2.0, data_shift=-1.0, shape=SHAPE)
    again = VPDenoiser(model, **vp.config)
    x = _noisy(gmm, 0.3, generator)
    torch.testing.assert_close(again(x, 0.3), vp(x, 0.3), rtol=0, atol=0)
    assert again.shape == SHAPE and again.num_timesteps == 500
    # The schedule travels in ``config``: the state dict holds the network's tensors only.
    assert list(vp.state_dict()) == [f"model.{k}" for k in model.state_dict()]
