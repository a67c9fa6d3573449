"""deepinv's DPS and DiffPIR behind our sampler signature: conventions, seeding, shapes, guards."""

from __future__ import annotations

import pytest
import sigpy.mri
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.samplers import SAMPLERS, sample_deepinv_diffpir, sample_deepinv_dps
from invdiff.samplers.deepinv_samplers import DeepinvDenoiser, vp_time
from invdiff.schedules import sigmas_vp
from operators.base import RealToComplex
from operators.masks import fastmri_mask
from operators.mri import MultiCoilMRI
from operators.noise import GaussianNoise
from operators.nonlinear import PhaseRetrieval
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

STEPS = {"deepinv_dps": 20, "deepinv_diffpir": 10}
HYPER = {
    # The test prior spreads over about [-3, 3]; DPS's clip and DiffPIR's clamp need the range.
    "deepinv_dps": {"weight": 1.0, "data_range": (-5.0, 5.0)},
    "deepinv_diffpir": {"data_range": (-5.0, 5.0)},
}
NAMES = sorted(STEPS)


def _run(name, prior, op, y, seed, **kwargs):
    kwargs = {**HYPER[name], **kwargs}
    sigmas = sigmas_vp(STEPS[name])
    return SAMPLERS[name](prior, op, y, sigmas, noise_std=0.3, generator=seeded(seed), **kwargs)


def _batch(y: torch.Tensor, B: int = 4) -> torch.Tensor:
    return y.reshape(1, -1).expand(B, -1).clone()


def test_registered():
    assert SAMPLERS["deepinv_dps"] is sample_deepinv_dps
    assert SAMPLERS["deepinv_diffpir"] is sample_deepinv_diffpir


@pytest.mark.parametrize("name", NAMES)
def test_reproducible_from_the_generator_and_global_rng_untouched(name):
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    state = torch.random.get_rng_state()
    x1, info = _run(name, prior, op, ys, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.rand(3)  # moving the global generator changes nothing
    x2, _ = _run(name, prior, op, ys, seed=5)
    x3, _ = _run(name, prior, op, ys, seed=6)
    assert torch.equal(x1, x2)
    assert not torch.allclose(x1, x3)
    assert x1.shape == (4, 1, 1, 6) and x1.dtype == torch.float64
    assert info["nfe"] == STEPS[name] and info["seconds"] > 0
    assert torch.equal(ys, _batch(y))


def test_dps_runs_on_our_schedule():
    """DPS steps through exactly our sigmas (deepinv's VP times at those levels), one call each."""
    prior, op, y, _ = gaussian_problem(seed=0)
    seen = []
    sigmas = sigmas_vp(STEPS["deepinv_dps"])
    _run("deepinv_dps", prior, op, _batch(y), seed=1, callback=seen.append)
    assert [s["i"] for s in seen] == list(range(len(sigmas) - 1))
    assert [s["sigma"] for s in seen] == pytest.approx(sigmas[:-1].tolist(), rel=1e-6)
    assert all(s["x"].shape == s["x0_hat"].shape == (4, 1, 1, 6) for s in seen)


def test_diffpir_runs_its_own_schedule():
    """DiffPIR takes only the number of steps from sigmas; its levels are DDPM's, in our units."""
    prior, op, y, _ = gaussian_problem(seed=0)
    seen = []
    _run("deepinv_diffpir", prior, op, _batch(y), seed=1, callback=seen.append)
    levels = [s["sigma"] for s in seen]
    assert len(levels) == STEPS["deepinv_diffpir"]
    assert all(a > b for a, b in zip(levels, levels[1:]))
    # Its [-1, 1] state is ours / 5 for data_range (-5, 5): the first level is 5 x DDPM's largest.
    assert levels[0] == pytest.approx(5 * float(sigmas_vp(1000)[0]), rel=1e-4)


def test_vp_time_inverts_deepinv_sde():
    import deepinv

    sigmas = sigmas_vp(50)
    sde = deepinv.sampling.VariancePreservingDiffusion()
    torch.testing.assert_close(sde.sigma_t(vp_time(sigmas)), sigmas, rtol=1e-10, atol=1e-12)
    assert float(vp_time([0.0])) == 0.0


def test_denoiser_adapter_maps_the_range():
    prior, _, _, _ = gaussian_problem(seed=0)
    x01 = torch.rand(3, 1, 1, 6, generator=seeded(2), dtype=torch.float64)
    adapter = DeepinvDenoiser(prior, (-2.0, 3.0), torch.float64, "test")
    expected = (prior(-2.0 + 5.0 * x01, 5.0 * 0.1) + 2.0) / 5.0
    torch.testing.assert_close(adapter(x01.float(), torch.tensor(0.1)), expected, rtol=1e-6, atol=1e-6)
    assert adapter.calls == 1


def test_samples_fit_the_measurement():
    """Both move the prior's samples towards the data. Observed mean residuals: prior samples 4.7,
    exact posterior 0.12, DiffPIR 0.32, DPS 0.53 (weight 10; 2.2 with weight 1)."""
    prior, op, y, _ = gaussian_problem(seed=0, noise_std=0.1)
    ys = _batch(y, 16)
    prior_residual = (op.A(prior.sample(16, generator=seeded(3))) - ys).norm(dim=1)
    for name, extra in (("deepinv_dps", {"weight": 10.0}), ("deepinv_diffpir", {})):
        x, _ = _run(name, prior, op, ys, seed=4, **extra)
        residual = (op.A(x) - ys).norm(dim=1)
        assert float(residual.mean()) < 0.25 * float(prior_residual.mean())


def test_complex_mri_operator_with_a_two_channel_prior():
    """``MultiCoilMRI @ RealToComplex`` through ``to_deepinv``: real (B, 2, H, W) samples come back."""
    size = 8
    g = seeded(6)
    means = 0.3 * torch.randn(2, 2 * size * size, generator=g, dtype=torch.float64)
    covs = 0.05 * torch.eye(2 * size * size, dtype=torch.float64).expand(2, -1, -1)
    prior = GaussianMixture(means, covs, shape=(2, size, size))
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((4, size, size))).to(torch.complex128)
    mask = fastmri_mask((size, size), 2, 0.25, kind="equispaced", seed=0).double()
    op = MultiCoilMRI(maps, mask) @ RealToComplex()
    x_true = prior.sample(1, generator=g)
    y = GaussianNoise(0.01)(op.A(x_true), generator=g)
    for name, sample in (("deepinv_dps", sample_deepinv_dps), ("deepinv_diffpir", sample_deepinv_diffpir)):
        x, info = sample(prior, op, y, sigmas_vp(STEPS[name]), noise_std=0.01, generator=seeded(7))
        assert x.shape == (1, 2, size, size) and x.dtype == torch.float64 and bool(torch.isfinite(x).all())
        assert info["nfe"] == STEPS[name]


class _BreaksAtCall(GaussianMixture):
    def __init__(self, base: GaussianMixture, k: int):
        super().__init__(base.means, base.covs)
        self.k, self.calls = k, 0

    def forward(self, x, sigma):
        self.calls += 1
        out = super().forward(x, sigma)
        return out * float("nan") if self.calls > self.k else out


@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name):
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    bad = ys.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"y: contains 1 NaN"):
        _run(name, prior, op, bad, seed=1)
    with pytest.raises(ValueError, match="data_range: expected"):
        _run(name, prior, op, ys, seed=1, data_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="sigmas"):
        SAMPLERS[name](prior, op, ys, torch.tensor([1.0, 2.0, 0.0]), noise_std=0.3, generator=seeded(0))
    with pytest.raises(FloatingPointError, match=rf"sample_{name}: non-finite values at step 3 \(sigma="):
        _run(name, _BreaksAtCall(prior, k=3), op, ys, seed=1)


def test_bad_hyperparameters():
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    with pytest.raises(ValueError, match="sample_deepinv_dps: guidance"):
        _run("deepinv_dps", prior, op, ys, seed=1, guidance="square")
    with pytest.raises(ValueError, match="sample_deepinv_diffpir: zeta"):
        _run("deepinv_diffpir", prior, op, ys, seed=1, zeta=1.5)
    with pytest.raises(ValueError, match="sample_deepinv_diffpir: noise_std"):
        sample_deepinv_diffpir(prior, op, ys, sigmas_vp(5), noise_std=0.0, generator=seeded(0))
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((2, 4, 4))).to(torch.complex128)
    bare = MultiCoilMRI(maps, torch.ones(4, 4, dtype=torch.float64))
    prior_4x4 = GaussianMixture(torch.zeros(1, 16, dtype=torch.float64), torch.eye(16)[None], shape=(1, 4, 4))
    with pytest.raises(ValueError, match="sample_deepinv_diffpir: op: op.AT.y. is complex.*RealToComplex"):
        sample_deepinv_diffpir(prior_4x4, bare, torch.zeros(1, 2, 4, 4, dtype=torch.complex128), sigmas_vp(5),
                               noise_std=0.1, generator=seeded(0))
    with pytest.raises(ValueError, match="sample_deepinv_diffpir: op: expected a LinearOperator"):
        sample_deepinv_diffpir(
            prior, PhaseRetrieval(2.0), torch.rand(2, 1, 4, 4, dtype=torch.float64), sigmas_vp(5),
            noise_std=0.1, generator=seeded(0), shape=(2, 1, 1, 6),
        )
