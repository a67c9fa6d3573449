"""The sampler contract: registries, seeding, per-sample independence, shapes, input and step guards."""

from __future__ import annotations

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.samplers import BASELINES, SAMPLERS, UNCONDITIONAL, get_sampler, sample_dds, sample_dps
from invdiff.samplers.common import ddim_coefficients
from invdiff.schedules import sigmas_karras, sigmas_vp
from operators.base import Matrix, Operator
from operators.nonlinear import PhaseRetrieval
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

STEPS = {
    "dps": 30, "dds": 15, "reddiff": 20, "smc_ensemble": 15, "tds": 15, "diffusion_mbir": 15,
    "diffusion_mbir_paper": 15, "dds3d": 15,
    "deepinv_dps": 15, "deepinv_diffpir": 15, "twisted_ensemble": 15, "afdps": 15,
    "daps": 10, "pigdm": 15, "diffpir": 15,
    "ddrm": 15, "ddnm": 15,
    "fps": 15, "mcgdiff": 15, "ads": 15,
}
PARTICLES = {"smc_ensemble": 8, "tds": 8, "twisted_ensemble": 8, "afdps": 8, "fps": 8, "mcgdiff": 8, "ads": 8}
"""Samplers whose state holds ``num_particles`` particles per problem."""
NFE_PER_STEP = {"diffusion_mbir_paper": 2, "daps": 5}
"""Samplers with more than one network evaluation per step (predictor and corrector)."""
OWN_SCHEDULE = {"deepinv_diffpir"}
"""Samplers that step through their own noise levels (``len(sigmas) - 1`` of them), not ``sigmas``."""
STIFF = {"afdps"}
"""Samplers whose explicit step needs small steps in u = sigma^2 against the likelihood's curvature:
run on 15 steps uniform in u below sigma = 0.3 (noise std 0.2)."""
COUPLED = {"diffusion_mbir", "diffusion_mbir_paper", "dds3d"}
"""Samplers whose batch is one volume (slices coupled by the z-regulariser), not independent problems."""


def _sigmas(name):
    if name in STIFF:
        return torch.linspace(0.09, 0, STEPS[name] + 1, dtype=torch.float64).sqrt()
    return sigmas_vp(STEPS[name])


def _run(name, prior, op, y, seed, **kwargs):
    if name in PARTICLES:
        kwargs.setdefault("num_particles", PARTICLES[name])
    return SAMPLERS[name](
        prior, op, y, _sigmas(name), noise_std=0.2, generator=seeded(seed), **kwargs
    )


def _batch(y: torch.Tensor, B: int = 4) -> torch.Tensor:
    return y.reshape(1, -1).expand(B, -1).clone()


def test_registries_and_get_sampler():
    assert set(SAMPLERS) == set(STEPS)
    assert set(UNCONDITIONAL) == {"ddim", "euler", "heun", "dpmpp_2m", "unipc", "deis"}
    assert set(BASELINES) == {
        "adjoint", "cg", "pinv", "fbp", "postlog_fbp", "error_reduction", "zero_filled", "l1_wavelet", "tv"
    }
    assert get_sampler("dds") is sample_dds and get_sampler("dps") is sample_dps
    for registry in (UNCONDITIONAL, BASELINES):
        for name, fn in registry.items():
            assert get_sampler(name) is fn
    with pytest.raises(ValueError, match="unknown sampler 'langevin'.*adjoint.*dds.*dpmpp_2m.*dps.*heun"):
        get_sampler("langevin")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_samples(name):
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    x1, info = _run(name, prior, op, ys, seed=5)
    x2, _ = _run(name, prior, op, ys, seed=5)
    x3, _ = _run(name, prior, op, ys, seed=6)
    assert torch.equal(x1, x2)
    assert not torch.allclose(x1, x3)
    assert x1.shape == (4, 1, 1, 6) and x1.dtype == torch.float64
    assert info["nfe"] == NFE_PER_STEP.get(name, 1) * STEPS[name] and info["seconds"] > 0


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - COUPLED))
def test_samples_are_independent_problems(name):
    """Changing the other samples' measurements leaves sample 0 alone (per-sample norms and CG)."""
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    x, _ = _run(name, prior, op, ys, seed=5)
    ys_other = ys.clone()
    ys_other[1:] = 3.0 * torch.randn(3, ys.shape[1], generator=seeded(8), dtype=torch.float64)
    x_other, _ = _run(name, prior, op, ys_other, seed=5)
    torch.testing.assert_close(x_other[0], x[0], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(x_other[1:], x[1:])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_sees_every_step(name):
    prior, op, y, _ = gaussian_problem(seed=0)
    seen = []
    _run(name, prior, op, _batch(y), seed=5, callback=seen.append)
    assert [s["i"] for s in seen] == list(range(STEPS[name]))
    sigmas = _sigmas(name)
    if name in OWN_SCHEDULE:
        assert all(b < a for a, b in zip([s["sigma"] for s in seen], [s["sigma"] for s in seen][1:]))
    else:
        assert [s["sigma"] for s in seen] == pytest.approx(sigmas[:-1].tolist())
    state = (4 * PARTICLES.get(name, 1), 1, 1, 6)
    assert all(s["x"].shape == s["x0_hat"].shape == state for s in seen)


def test_inputs_are_not_modified():
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    before = ys.clone()
    for name in SAMPLERS:
        _run(name, prior, op, ys, seed=1)
    assert torch.equal(ys, before)


def test_ddim_coefficients():
    # eta = 1 is DDPM's posterior std, and the total noise std is sigma_next in every case.
    sigma, sigma_next = 2.0, 1.5
    for eta in (0.0, 0.4, 1.0):
        c1, c2 = ddim_coefficients(sigma, sigma_next, eta)
        assert c1**2 + c2**2 == pytest.approx(sigma_next**2)
    assert ddim_coefficients(sigma, sigma_next, 0.0) == (0.0, sigma_next)
    assert ddim_coefficients(sigma, sigma_next, 1.0)[1] == pytest.approx(sigma_next**2 / sigma)
    assert ddim_coefficients(sigma, 0.0, 1.0) == (0.0, 0.0)


# --- shapes ---------------------------------------------------------------------------------------


def test_shape_from_the_operator_when_the_prior_has_none():
    prior, op, y, _ = gaussian_problem(seed=0)
    prior.shape = None
    x, _ = _run("dds", prior, op, _batch(y), seed=1)
    assert x.shape == (4, 1, 1, 6)


def test_shape_required_for_nonlinear_operator_and_shapeless_prior():
    prior, _, _, _ = gaussian_problem(seed=0, d=4)
    prior.shape = None
    y = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        sample_dps(prior, PhaseRetrieval(2.0), y, sigmas_vp(5), noise_std=0.1, generator=seeded(0))
    x, _ = sample_dps(
        prior, PhaseRetrieval(2.0), y, sigmas_vp(5), noise_std=0.1, generator=seeded(0), shape=(2, 1, 2, 2)
    )
    assert x.shape == (2, 1, 2, 2)


def test_shape_batch_must_match_y():
    prior, op, y, _ = gaussian_problem(seed=0)
    with pytest.raises(ValueError, match="shape"):
        _run("dps", prior, op, _batch(y), seed=1, shape=(3, 1, 1, 6))


# --- bad input ------------------------------------------------------------------------------------


class _Cube(Operator):
    def A(self, x):
        return x.reshape(x.shape[0], -1) ** 3


def test_dds_rejects_nonlinear_operators():
    prior, _, y, _ = gaussian_problem(seed=0)
    with pytest.raises(ValueError, match="sample_dds.*LinearOperator.*sample_dps"):
        sample_dds(prior, _Cube(), _batch(y), sigmas_vp(5), noise_std=0.1, generator=seeded(0))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_measurements(name, bad):
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    ys[2, 1] = bad
    with pytest.raises(ValueError, match=r"y: contains 1 NaN"):
        _run(name, prior, op, ys, seed=1)


class _BreaksAtCall(GaussianMixture):
    """Returns NaN from its ``k``-th call on."""

    def __init__(self, base: GaussianMixture, k: int):
        super().__init__(base.means, base.covs)
        self.k, self.calls = k, 0

    def forward(self, x, sigma):
        out = super().forward(x, sigma)
        self.calls += 1
        return out * float("nan") if self.calls > self.k else out


@pytest.mark.parametrize("name", sorted(SAMPLERS) + sorted(UNCONDITIONAL))
def test_non_finite_step_names_sampler_step_and_sigma(name):
    prior, op, y, _ = gaussian_problem(seed=0)
    broken = _BreaksAtCall(prior, k=3)
    sigmas = sigmas_vp(10)
    # Heun and the predictor-corrector evaluate twice per step: the 4th call is in step 1 (DAPS's
    # five ODE steps per level: step 0).
    step = 3 // NFE_PER_STEP.get(name, 2 if name == "heun" else 1)
    sigma = r"[0-9.e+-]+" if name in OWN_SCHEDULE else f"{float(sigmas[step]):.6g}"
    message = rf"sample_\w+: non-finite values at step {step} \(sigma={sigma}\)"
    with pytest.raises(FloatingPointError, match=message):
        if name in SAMPLERS:
            extra = {"num_particles": PARTICLES[name]} if name in PARTICLES else {}
            SAMPLERS[name](broken, op, _batch(y), sigmas, noise_std=0.2, generator=seeded(0), **extra)
        else:
            UNCONDITIONAL[name](broken, sigmas, shape=(4, 1, 1, 6), generator=seeded(0))


def test_bad_hyperparameters():
    prior, op, y, _ = gaussian_problem(seed=0)
    ys = _batch(y)
    with pytest.raises(ValueError, match="eta"):
        _run("dps", prior, op, ys, seed=1, eta=1.5)
    with pytest.raises(ValueError, match="gamma"):
        _run("dds", prior, op, ys, seed=1, gamma=-1.0)
    with pytest.raises(ValueError, match="cg_steps"):
        _run("dds", prior, op, ys, seed=1, cg_steps=-2)
    with pytest.raises(ValueError, match="sigmas.*decreasing"):
        sample_dds(prior, op, ys, torch.tensor([1.0, 2.0, 0.0]), noise_std=0.1, generator=seeded(0))
    with pytest.raises(ValueError, match="sigmas"):
        sample_dps(prior, op, ys, torch.tensor([1.0]), noise_std=0.1, generator=seeded(0))


def test_complex_operator_with_real_prior_runs():
    """A real prior under a complex operator: x stays real, residuals are complex."""
    prior, _, y, _ = gaussian_problem(seed=0, d=6, m=2)
    M = torch.randn(2, 6, generator=seeded(3), dtype=torch.complex128)
    op = Matrix(M, (1, 1, 6))
    y_c = op.A(prior.sample(4, generator=seeded(4)))
    sigmas = sigmas_karras(10, 0.01, 20.0)
    x, info = sample_dps(prior, op, y_c, sigmas, noise_std=0.1, zeta=0.05, generator=seeded(0))
    assert x.dtype == torch.float64 and info["residual_norm"].dtype == torch.float64
