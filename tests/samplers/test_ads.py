"""Active diffusion subsampling: the selection against closed-form Gaussian posteriors, the
acquisition loop, its errors and its reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.priors.gmm import GaussianMixture
from invdiff.samplers.ads import (
    acquisition_plan,
    particle_entropy,
    predicted_variance,
    sample_ads,
    select_units,
    start_units,
)
from invdiff.schedules import make_sigmas, sigmas_vp
from operators import Inpainting, MultiCoilMRI, ParallelBeamCT, RealToComplex, measurement_units
from tests.samplers import seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

H = W = 4
D = H * W
NOISE = 0.1


def paired_prior(seed: int = 3) -> tuple[GaussianMixture, torch.Tensor]:
    """A Gaussian on 4 x 4 pixels in correlated pairs (correlation 0.95), the pairs' variances
    halving from 8 and the second of a pair at 0.7 of the first, the pixels shuffled: acquiring a
    pixel leaves its partner little variance, so the greedy order depends on the conditioning."""
    cov = torch.zeros(D, D, dtype=torch.float64)
    for k in range(D // 2):
        va, vb = 8.0 / 2**k, 0.7 * 8.0 / 2**k
        a, b = 2 * k, 2 * k + 1
        cov[a, a], cov[b, b] = va, vb
        cov[a, b] = cov[b, a] = 0.95 * math.sqrt(va * vb)
    perm = torch.randperm(D, generator=seeded(seed))
    cov = cov[perm][:, perm]
    return GaussianMixture(torch.zeros(1, D, dtype=torch.float64), cov[None], shape=(1, H, W)), cov


def posterior_cov(cov: torch.Tensor, acquired: list[int]) -> torch.Tensor:
    """The covariance of the pixels given noisy observations of the ``acquired`` ones."""
    if not acquired:
        return cov
    S = acquired
    gain = cov[:, S] @ torch.linalg.inv(cov[S][:, S] + NOISE**2 * torch.eye(len(S), dtype=cov.dtype))
    return cov - gain @ cov[S, :]


def greedy_order(cov: torch.Tensor, start: list[int], count: int) -> list[int]:
    """The closed-form greedy acquisition: each time the pixel of largest posterior predictive
    variance (posterior variance plus the noise's) given those acquired before."""
    acquired = list(start)
    for _ in range(count):
        variance = posterior_cov(cov, acquired).diagonal() + NOISE**2
        variance[acquired] = -math.inf
        acquired.append(int(variance.argmax()))
    return acquired


def measurement(prior: GaussianMixture, seed: int = 0) -> torch.Tensor:
    g = seeded(seed)
    x = prior.sample(1, generator=g).reshape(1, 1, H, W)
    return x + NOISE * torch.randn(x.shape, generator=g, dtype=x.dtype)


def test_particle_variance_is_the_posterior_predictive_variance():
    """Particles drawn from the exact Gaussian posterior: the per-unit score converges to the
    closed-form predictive variance and ranks the units as it does."""
    prior, cov = paired_prior()
    op = Inpainting(torch.ones(H, W, dtype=torch.float64))
    units = measurement_units(op)
    y = measurement(prior)
    for acquired in ([], [14], [14, 15, 12]):
        A = torch.eye(D, dtype=torch.float64)[acquired]
        post = prior.posterior(A, y.reshape(D)[acquired], NOISE) if acquired else prior
        particles = post.sample(40000, generator=seeded(1)).reshape(-1, 1, H, W)
        score = predicted_variance(units, op.A(particles), 40000)[0]
        exact = posterior_cov(cov, acquired).diagonal()
        torch.testing.assert_close(score, exact, rtol=0.05, atol=1e-3)
        free = [u for u in range(D) if u not in acquired]
        assert max(free, key=lambda u: float(score[u])) == max(free, key=lambda u: float(exact[u]))


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_gaussian_prior_acquires_the_largest_predictive_variance(seed):
    """The whole loop on an exact Gaussian prior (DDS between acquisitions, selections late enough
    for the particles to have taken up each new pixel): the order is the closed-form greedy one."""
    prior, cov = paired_prior()
    y = measurement(prior)
    op = Inpainting(torch.ones(H, W, dtype=torch.float64))
    sigmas = make_sigmas("vp", 200, sigma_min=0.002, sigma_max=80.0)
    _, info = sample_ads(
        prior, op, y, sigmas, noise_std=NOISE, generator=seeded(seed), budget=5, num_particles=64,
        schedule=[[120, 1], [135, 1], [150, 1], [165, 1], [180, 1]], guidance="dds", shape=(1, 1, H, W),
    )
    assert info["order"][0].tolist() == greedy_order(cov, [], 5)
    assert info["acquired_at"][0].tolist() == [120, 135, 150, 165, 180]
    mask = torch.zeros(D, dtype=torch.bool)
    mask[info["order"][0]] = True
    assert torch.equal(info["mask"][0].reshape(D), mask) and info["unit"] == "pixels"


def test_entropy_ranks_as_variance_for_a_wide_kernel():
    prior, _ = paired_prior()
    units = measurement_units(Inpainting(torch.ones(H, W, dtype=torch.float64)))
    particles = prior.sample(64, generator=seeded(2)).reshape(-1, 1, H, W)
    variance = predicted_variance(units, particles, 64)[0]
    entropy = particle_entropy(units, particles, 64, sigma=1e3)[0]
    assert torch.equal(variance.argsort(), entropy.argsort())
    # first order in 1 / sigma^2: H = N log N + N * variance / sigma^2
    torch.testing.assert_close(entropy - 64 * math.log(64), 64 * variance / 1e6, rtol=1e-3, atol=0)


def test_select_units_takes_the_best_available_ties_to_the_lower_index():
    scores = torch.tensor([[1.0, 5.0, 5.0, 0.5, 9.0]])
    available = torch.tensor([[True, True, True, True, False]])
    new, chosen = select_units(scores, available, 2)
    assert chosen.tolist() == [[1, 2]] and new.tolist() == [[False, True, True, False, False]]


def test_plan_spreads_the_units_over_the_window():
    plan = acquisition_plan(1000, 32, (0.05, 0.5), None)  # the paper's window: one unit every 14 steps
    assert len(plan) == 32 and min(plan) == 50 and max(plan) == 50 + 31 * 450 // 32 and set(plan.values()) == {1}
    plan = acquisition_plan(50, 30, (0.1, 0.5), None)
    assert sum(plan.values()) == 30 and min(plan) == 5 and max(plan) < 25 and max(plan.values()) == 2
    assert acquisition_plan(10, 2, (0, 1), [[3, 1], [7, 1]]) == {3: 1, 7: 1}


def _mri(lines: int = 16, coils: int = 3):
    g = seeded(0)
    maps = torch.randn(coils, lines, lines, dtype=torch.complex128, generator=g)
    op = MultiCoilMRI(maps, torch.ones(lines, lines, dtype=torch.float64)) @ RealToComplex()
    x = torch.randn(1, 2, lines, lines, dtype=torch.float64, generator=g)
    return op, op.A(x)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"budget": 17}, r"budget: 17 units asked, the operator measures 16 lines"),
        ({"budget": 4, "start": 6}, r"start: 6 units exceed the budget of 4"),
        ({"budget": 8, "start": 17}, r"start: expected 0 to 16 centre units"),
        ({"budget": 8, "start": [3, 3]}, r"start: expected distinct unit indices"),
        ({"budget": 8, "num_particles": 1}, r"num_particles: choosing units needs at least 2"),
        ({"budget": 8, "guidance": "pigdm"}, r"guidance: expected one of dps, dds"),
        ({"budget": 8, "score": "mutual"}, r"score: expected one of variance, entropy"),
        ({"budget": 8, "window": (0.5, 0.2)}, r"window: expected \(start, stop\) fractions"),
        ({"budget": 8, "start": 4, "schedule": [[2, 3]]}, r"schedule: acquires 3 units, the budget leaves 4"),
        ({"budget": 8, "unit": "views"}, r"unit: 'views' does not fit"),
    ],
)
def test_bad_acquisitions_are_clear_errors(options, message):
    op, y = _mri()
    with pytest.raises(ValueError, match=message):
        sample_ads(lambda x, s: x, op, y, sigmas_vp(10), noise_std=0.1, generator=seeded(0), **options)


def test_start_outside_the_candidates_is_an_error():
    mask = torch.zeros(8, 8, dtype=torch.float64)
    mask[:, ::2] = 1
    op = MultiCoilMRI(torch.ones(1, 8, 8, dtype=torch.complex128), mask) @ RealToComplex()
    y = op.A(torch.randn(1, 2, 8, 8, dtype=torch.float64, generator=seeded(0)))
    with pytest.raises(ValueError, match=r"budget: 5 units asked, the operator measures 4 lines"):
        sample_ads(lambda x, s: x, op, y, sigmas_vp(10), noise_std=0.1, generator=seeded(0), budget=5)
    with pytest.raises(ValueError, match=r"start: units \[3\] include some the operator does not measure"):
        sample_ads(lambda x, s: x, op, y, sigmas_vp(10), noise_std=0.1, generator=seeded(0), budget=3, start=[3])


def test_start_units():
    units = measurement_units(_mri()[0])
    assert start_units(5, units) == [6, 7, 8, 9, 10] and start_units(None, units) == []
    assert start_units([9, 2], units) == [2, 9]


@pytest.mark.parametrize("guidance", ["dps", "dds"])
def test_same_seed_same_order(guidance):
    prior, _ = paired_prior()
    y = measurement(prior)
    op = Inpainting(torch.ones(H, W, dtype=torch.float64))
    run = lambda seed: sample_ads(  # noqa: E731
        prior, op, y, sigmas_vp(30), noise_std=NOISE, generator=seeded(seed), budget=6, start=[0],
        num_particles=4, guidance=guidance, zeta=0.1, window=(0.0, 1.0), shape=(1, 1, H, W),
    )
    (x1, a), (x2, b) = run(7), run(7)
    assert torch.equal(a["order"], b["order"]) and torch.equal(x1, x2)
    assert a["order"].shape == (1, 6) and a["order"][0, 0] == 0 and a["acquired_at"][0, 0] == -1


def test_the_scanner_callback_is_read_once_per_acquisition_for_the_new_units_only():
    op, y = _mri()
    calls = []

    def scanner(new):
        calls.append(new.clone())
        return y + 0  # a measurement of the full shape; only the new units' values are used

    x, info = sample_ads(lambda x, s: x / (1 + s**2), op, y, sigmas_vp(12), noise_std=0.1, generator=seeded(0),
                         budget=7, start=3, num_particles=3, guidance="dds", window=(0.0, 1.0), acquire=scanner)
    assert len(calls) == 1 + 4  # the start, then one line per planned step
    assert calls[0][0].nonzero().flatten().tolist() == [7, 8, 9]
    assert all(int(c.sum()) == 1 for c in calls[1:])
    acquired = torch.stack(calls).any(0)[0]
    assert torch.equal(acquired, info["mask"][0]) and info["mask"].shape == (1, 16)
    with pytest.raises(ValueError, match=r"acquire: expected a measurement of shape \(1, 3, 16, 16\)"):
        sample_ads(lambda x, s: x, op, y, sigmas_vp(5), noise_std=0.1, generator=seeded(0), budget=4,
                   acquire=lambda new: y[..., :8])


def test_without_a_budget_the_particles_use_the_given_units():
    """``budget=None``: nothing acquired, the mask is the operator's own (the fixed-mask comparison)."""
    mask = torch.zeros(16, 16, dtype=torch.float64)
    mask[:, 4:12] = 1
    maps = torch.randn(2, 16, 16, dtype=torch.complex128, generator=seeded(1))
    op = MultiCoilMRI(maps, mask) @ RealToComplex()
    y = op.A(torch.randn(1, 2, 16, 16, dtype=torch.float64, generator=seeded(0)))
    _, info = sample_ads(lambda x, s: x / (1 + s**2), op, y, sigmas_vp(5), noise_std=0.1, generator=seeded(0),
                         num_particles=2, guidance="dds")
    assert info["mask"][0].tolist() == [4 <= w < 12 for w in range(16)] and info["order"].shape == (1, 0)


def test_ct_views_and_blocks():
    """Views of a CT projector and blocks of an inpainting mask are units too."""
    ct = ParallelBeamCT((8, 8), 12)
    x = torch.rand(1, 1, 8, 8, generator=seeded(0))
    _, info = sample_ads(lambda x, s: x / (1 + s**2), ct, ct.A(x), sigmas_vp(8), noise_std=0.1,
                         generator=seeded(0), budget=3, num_particles=2, guidance="dds", window=(0.0, 1.0))
    assert info["unit"] == "views" and info["mask"].shape == (1, 12) and int(info["mask"].sum()) == 3
    op = Inpainting(torch.ones(8, 8))
    _, info = sample_ads(lambda x, s: x / (1 + s**2), op, x, sigmas_vp(8), noise_std=0.1, generator=seeded(0),
                         budget=2, num_particles=2, guidance="dds", unit="blocks", block=4, window=(0.0, 1.0))
    assert info["unit"] == "blocks" and info["mask"].shape == (1, 2, 2) and int(info["mask"].sum()) == 2
