"""Hostile input to the samplers and baselines: NaN or infinite measurements, empty batches, NaN,
infinite or negative hyperparameters.

Parametrised over the registries, so a new sampler is covered as soon as it is registered; a new
baseline needs a small valid problem in ``BASELINE_CASES`` (a test fails until it has one). Each
bad input must end in a ``ValueError`` that names the function and the argument, never in a
silent result.
"""

from __future__ import annotations

import math

import pytest
import sigpy.mri
import torch

from invdiff.samplers import BASELINES, SAMPLERS
from invdiff.schedules import sigmas_vp
from operators import (
    Inpainting,
    Matrix,
    MultiCoilMRI,
    ParallelBeamCT,
    PhaseRetrieval,
    RealToComplex,
    TransmissionCT,
)
from tests.samplers import gaussian_problem, seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.hostile

NAN, INF = float("nan"), float("inf")
PARTICLES = {"smc_ensemble": 4, "tds": 4, "twisted_ensemble": 4, "afdps": 4}
POSITIVE_NOISE = {"smc_ensemble", "twisted_ensemble", "tds", "afdps", "deepinv_diffpir"}
"""Samplers whose likelihood needs ``noise_std > 0``."""


def _sampler_call(name: str, y: torch.Tensor | None = None, sigmas=None, **kwargs):
    prior, op, y1, _ = gaussian_problem(seed=0)
    if y is None:
        y = y1.reshape(1, -1).expand(2, -1).clone()
    if name in PARTICLES:
        kwargs.setdefault("num_particles", PARTICLES[name])
    kwargs.setdefault("noise_std", 0.2)
    sigmas = sigmas_vp(4) if sigmas is None else sigmas
    return SAMPLERS[name](prior, op, y, sigmas, generator=seeded(0), **kwargs)


def _sampler_y() -> torch.Tensor:
    _, _, y, _ = gaussian_problem(seed=0)
    return y.reshape(1, -1).expand(2, -1).clone()


# --- A. non-finite measurements -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_samplers_reject_non_finite_measurements(name, bad):
    y = _sampler_y()
    y[1, 0] = bad
    with pytest.raises(ValueError, match=r"sample_\w+: y: contains 1 NaN or infinite values \(of 4\)"):
        _sampler_call(name, y)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_reject_an_empty_batch(name):
    with pytest.raises(ValueError, match=r"sample_\w+: y: expected a non-empty batch"):
        _sampler_call(name, torch.zeros(0, 2, dtype=torch.float64))


def _mri(embedded: bool = True):
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((2, 8, 8))).to(torch.complex64)
    mask = torch.ones(8, 8)
    mask[:, ::2] = 0
    mri = MultiCoilMRI(maps, mask)
    op = mri @ RealToComplex() if embedded else mri
    x = torch.rand(1, 2, 8, 8, generator=seeded(0))
    return op, (mri @ RealToComplex()).A(x)


def _ct():
    op = ParallelBeamCT((8, 8), 6)
    return op, op.A(torch.rand(1, 1, 8, 8, generator=seeded(0)))


def _prelog():
    op = TransmissionCT(ParallelBeamCT((8, 8), 6), I0=1.0, mu=0.1)
    return op, op.A(torch.rand(1, 1, 8, 8, generator=seeded(0)))


def _phase():
    op = PhaseRetrieval(2.0)
    return op, op.A(torch.rand(1, 1, 4, 4, generator=seeded(0), dtype=torch.float64))


def _matrix():
    op = Matrix(torch.randn(3, 5, generator=seeded(0), dtype=torch.float64))
    return op, torch.randn(2, 3, generator=seeded(1), dtype=torch.float64)


def _inpaint():
    mask = (torch.rand(6, 6, generator=seeded(0)) < 0.5).float()
    return Inpainting(mask), torch.rand(1, 1, 6, 6, generator=seeded(1)) * mask


BASELINE_CASES = {
    "adjoint": (_matrix, {}),
    "cg": (_matrix, {"max_iter": 5}),
    "pinv": (_matrix, {"max_iter": 5}),
    "fbp": (_ct, {}),
    "postlog_fbp": (_prelog, {}),
    "error_reduction": (_phase, {"iterations": 2}),
    "zero_filled": (_mri, {}),
    "l1_wavelet": (_mri, {"max_iter": 2}),
    "tv": (_inpaint, {"iterations": 2, "power_iterations": 2}),
}
"""A small valid ``(op, y)`` builder and fast options for each baseline."""


def test_every_baseline_has_a_case():
    assert set(BASELINE_CASES) == set(BASELINES)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_cases_are_valid(name):
    build, options = BASELINE_CASES[name]
    op, y = build()
    x, info = BASELINES[name](op, y, **options)
    assert bool(torch.isfinite(x).all()) and info["nfe"] == 0


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("bad", [NAN, INF])
def test_baselines_reject_non_finite_measurements(name, bad):
    build, options = BASELINE_CASES[name]
    op, y = build()
    y = y.clone()
    y.view(-1)[y.numel() // 2] = bad
    fn = BASELINES[name].__name__
    with pytest.raises(ValueError, match=rf"{fn}: y: contains 1 NaN or infinite values \(of {y.numel()}\)"):
        BASELINES[name](op, y, **options)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_reject_an_empty_batch(name):
    build, options = BASELINE_CASES[name]
    op, y = build()
    fn = BASELINES[name].__name__
    with pytest.raises(ValueError, match=rf"{fn}: y: expected a non-empty batch"):
        BASELINES[name](op, y[:0], **options)


def test_cg_baseline_does_not_report_a_nan_as_converged():
    """The fastMRI probe: one NaN in an unsampled k-space corner used to give x = 0 after 0 iterations."""
    op, y = _mri()
    y[0, 1, 0, 0] = complex(NAN, 0.0)
    with pytest.raises(ValueError, match=r"least_squares: y: contains 1 NaN"):
        BASELINES["cg"](op, y)


# --- D. NaN, infinite or negative hyperparameters -------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("bad", [NAN, INF, -1.0])
def test_samplers_reject_bad_noise_std(name, bad):
    with pytest.raises(ValueError, match=r"sample_\w+: noise_std: expected"):
        _sampler_call(name, noise_std=bad)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_reject_non_finite_sigmas(name):
    with pytest.raises(ValueError, match=r"sigmas: expected finite"):
        _sampler_call(name, sigmas=torch.tensor([1.0, NAN, 0.0], dtype=torch.float64))


BAD_HYPERPARAMETERS = [
    ("dps", "zeta", NAN), ("dps", "zeta", INF), ("dps", "zeta", -1.0), ("dps", "eta", NAN),
    ("dds", "cg_steps", NAN), ("dds", "cg_steps", -3), ("dds", "cg_steps", 2.5), ("dds", "gamma", INF),
    ("dds", "gamma", NAN), ("dds", "eta", NAN),
    ("diffusion_mbir", "rho", INF), ("diffusion_mbir", "lam", NAN), ("diffusion_mbir", "lam", INF),
    ("diffusion_mbir", "slice_batch", NAN), ("diffusion_mbir", "admm_cg", NAN),
    ("diffusion_mbir", "op_norm", INF), ("diffusion_mbir", "eta", NAN),
    ("diffusion_mbir_paper", "snr", INF), ("diffusion_mbir_paper", "rho", NAN),
    ("dds3d", "admm_cg", NAN), ("dds3d", "lam", INF), ("dds3d", "slice_batch", 0),
    ("reddiff", "lam", INF), ("reddiff", "lr", INF), ("reddiff", "obs_weight", NAN),
    ("reddiff", "obs_weight", -1.0), ("reddiff", "betas", (NAN, 0.9)), ("reddiff", "betas", (1.5, 0.9)),
    ("reddiff", "data_weight", INF),
    ("smc_ensemble", "num_particles", NAN), ("smc_ensemble", "kappa", INF), ("smc_ensemble", "data_std", INF),
    ("smc_ensemble", "ess_threshold", NAN),
    ("tds", "tausq", INF), ("tds", "kappa", NAN), ("tds", "data_std", NAN),
    ("afdps", "cg_steps", -1), ("afdps", "cg_steps", NAN), ("afdps", "num_particles", 1),
    ("deepinv_dps", "weight", INF), ("deepinv_dps", "data_range", (0.0, INF)),
    ("deepinv_diffpir", "lambda_", INF), ("deepinv_diffpir", "zeta", NAN),
]
"""``(sampler, argument, bad value)``: each must raise a ``ValueError`` naming the argument."""


@pytest.mark.parametrize(("name", "arg", "bad"), BAD_HYPERPARAMETERS, ids=lambda v: str(v))
def test_samplers_reject_bad_hyperparameters(name, arg, bad):
    with pytest.raises(ValueError, match=rf"sample_\w+: .*\b{arg}\b"):
        _sampler_call(name, **{arg: bad})


BAD_BASELINE_OPTIONS = [
    ("cg", "damping", INF), ("cg", "damping", NAN), ("postlog_fbp", "min_count", NAN),
    ("postlog_fbp", "min_count", 0.0), ("error_reduction", "iterations", NAN), ("l1_wavelet", "lamda", INF),
    ("l1_wavelet", "max_iter", NAN), ("tv", "lam", INF), ("tv", "step_ratio", INF), ("tv", "power_iterations", 0),
]
"""``(baseline, option, bad value)``: each must raise a ``ValueError`` naming the option."""


@pytest.mark.parametrize(("name", "option", "bad"), BAD_BASELINE_OPTIONS, ids=lambda v: str(v))
def test_baselines_reject_bad_options(name, option, bad):
    build, options = BASELINE_CASES[name]
    op, y = build()
    fn = BASELINES[name].__name__
    with pytest.raises(ValueError, match=rf"{fn}: {option}: expected a finite"):
        BASELINES[name](op, y, **{**options, option: bad})
