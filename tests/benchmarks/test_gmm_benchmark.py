"""The exact-posterior GMM benchmark end to end on tiny problems, and the sliced Wasserstein distance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from invdiff.benchmarks import BENCHMARKS
from invdiff.benchmarks.gmm import CSV_FIELDS, gmm_benchmark, grid_mixture, random_measurement
from invdiff.metrics import sliced_wasserstein
from invdiff.samplers import SAMPLERS
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- sliced Wasserstein ------------------------------------------------------------------------


def test_sliced_wasserstein_identity_symmetry_and_shift():
    x = torch.randn(400, 5, dtype=torch.float64, generator=_seeded(0))
    y = 1.5 * torch.randn(300, 5, dtype=torch.float64, generator=_seeded(1))
    sw = lambda a, b: sliced_wasserstein(a, b, projections=200, generator=_seeded(2))  # noqa: E731
    assert sw(x, x) == 0.0
    assert sw(x, y) == pytest.approx(sw(y, x), rel=1e-12)
    direction = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0], dtype=torch.float64)
    shifted = [sw(x, x + t * direction) for t in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(shifted, shifted[1:]))
    # A pure shift v: every 1D distance is |theta . v|, so SW2^2 = E (theta . v)^2 = |v|^2 / d.
    exact = float(direction.norm()) / 5**0.5
    assert sliced_wasserstein(x, x + direction, projections=20_000, generator=_seeded(3)) == pytest.approx(exact, rel=0.03)


def test_sliced_wasserstein_in_one_dimension_is_the_exact_wasserstein_distance():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(301), 2 * rng.standard_normal(173) + 0.7
    ta, tb = torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]
    # W1 with different sample sizes: scipy's reference.
    got = sliced_wasserstein(ta, tb, projections=3, generator=_seeded(0), p=1)
    assert got == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12)
    # W2 with equal sizes: sorted samples matched in order.
    c = rng.standard_normal(301) * 0.5 - 1
    expected = float(np.sqrt(np.mean((np.sort(a) - np.sort(c)) ** 2)))
    got = sliced_wasserstein(ta, torch.from_numpy(c)[:, None], projections=3, generator=_seeded(0))
    assert got == pytest.approx(expected, rel=1e-12)


def test_sliced_wasserstein_bad_input():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="elements per sample"):
        sliced_wasserstein(x, torch.zeros(3, 3), projections=4, generator=None)
    with pytest.raises(ValueError, match="projections"):
        sliced_wasserstein(x, x, projections=0, generator=None)


# --- problem setup -----------------------------------------------------------------------------


def test_mcgdiff_problem_setup():
    prior = grid_mixture(6, generator=_seeded(0))
    assert prior.means.shape == (25, 6) and prior.iso_var is not None
    grid = {(float(m[0]), float(m[1])) for m in prior.means}
    assert grid == {(8.0 * i, 8.0 * j) for i in range(-2, 3) for j in range(-2, 3)}
    torch.testing.assert_close(prior.means[:, 2:4], prior.means[:, :2])
    A, noise_std, y = random_measurement(prior, 2, generator=_seeded(1))
    s = torch.linalg.svdvals(A)
    assert A.shape == (2, 6) and y.shape == (2,)
    assert bool((s <= 1).all()) and 0 <= noise_std <= float(s.max())
    with pytest.raises(ValueError, match="even"):
        grid_mixture(5, generator=_seeded(0))


# --- the benchmark -----------------------------------------------------------------------------


def _exact(denoiser, op, y, sigmas, *, noise_std, generator, **params):
    """A perfect sampler: exact posterior samples, one per batch row (a chains sampler)."""
    post = denoiser.posterior(op.matrix, y[0], noise_std)
    return post.sample(y.shape[0], generator=generator), {"nfe": len(sigmas) - 1}


def _exact_particles(denoiser, op, y, sigmas, *, noise_std, generator, num_particles, **params):
    """A perfect particles sampler: ``info["particles"]`` ``(1, N, ...)``."""
    x = denoiser.posterior(op.matrix, y[0], noise_std).sample(num_particles, generator=generator)
    return x[:1], {"nfe": len(sigmas) - 1, "particles": x[None]}


def _config(tmp_path, **samplers):
    return dict(out_dir=str(tmp_path), dims=[4], measurements=[1, 2], seeds=[0], num_samples=400,
                projections=64, floor_repeats=2, threads=1, samplers=samplers, run=list(samplers))


def test_benchmark_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(SAMPLERS, "exact", _exact)
    monkeypatch.setitem(SAMPLERS, "exact_particles", _exact_particles)
    cfg = _config(
        tmp_path,
        dps={"population": "chains", "schedule": "vp", "steps": [10, 20], "particles": [100], "params": {"zeta": 0.3}},
        exact={"population": "chains", "steps": [5], "particles": [400]},
        smc={"sampler": "exact_particles", "population": "particles", "steps": [5], "particles": [50],
             "particles_by_dim": {4: [100, 400]}},
        elsewhere={"sampler": "exact", "steps": [5], "dims": [6]},
    )
    report = gmm_benchmark(**cfg)
    print(report)
    assert "| sampler | steps | NFE | N | d | SW | floor | SW / floor |" in report
    for line in ("| dps | 10 | 10 | 100 | 4 |", "| dps | 20 | 20 | 100 | 4 |", "| exact | 5 | 5 | 400 | 4 |",
                 "| smc | 5 | 5 | 100 | 4 |", "| smc | 5 | 5 | 400 | 4 |"):
        assert line in report
    # CSV: one row per problem (2) and sweep point (2 + 1 + 2).
    with open(tmp_path / "gmm.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and list(rows[0]) == CSV_FIELDS
    # no "elsewhere": it runs at d = 6 only
    assert {(r["sampler"], r["population"]) for r in rows} == {
        ("dps", "chains"), ("exact", "chains"), ("smc", "particles")
    }
    # JSON: config, problems, rows and summary; exact samplers score about the floor, DPS far above.
    data = json.loads((tmp_path / "gmm.json").read_text())
    assert set(data) == {"config", "seconds", "problems", "rows", "summary"}
    assert len(data["problems"]) == 2 and len(data["rows"]) == 10 and len(data["summary"]) == 5
    ratios = {(s["sampler"], s["particles"]): s["ratio"] for s in data["summary"]}
    for key in [("exact", 400), ("smc", 100), ("smc", 400)]:
        assert 0.6 < ratios[key] < 1.6, (key, ratios[key])
    assert ratios[("dps", 100)] > 1.6
    for row in data["rows"]:
        assert row["sw"] == pytest.approx(row["ratio"] * row["floor"])
    assert (tmp_path / "gmm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_unregistered_sampler_stops_before_any_work(tmp_path):
    cfg = _config(tmp_path, dps={"steps": [5]}, not_yet={"population": "particles", "particles": [10]})
    with pytest.raises(ValueError, match=r"'not_yet'.*not registered.*benchmark.run=\[dps\]"):
        gmm_benchmark(**cfg)
    with pytest.raises(ValueError, match="no entry under samplers"):
        gmm_benchmark(**{**cfg, "run": ["dps", "missing"]})
    with pytest.raises(ValueError, match="population"):
        gmm_benchmark(**{**cfg, "samplers": {"dps": {"population": "swarm"}}, "run": ["dps"]})
    assert not list(tmp_path.iterdir())


def test_default_config_runs_with_tiny_overrides(tmp_path):
    """The shipped config's keys match the function; its registered entries run."""
    overrides = ["benchmark=gmm", f"benchmark.out_dir={tmp_path}", "benchmark.dims=[2]", "benchmark.measurements=[1]",
                 "benchmark.seeds=[0]", "benchmark.num_samples=100", "benchmark.projections=16",
                 "benchmark.floor_repeats=1"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose(config_name="benchmark", overrides=overrides)
    params = OmegaConf.to_container(cfg.benchmark, resolve=True)
    for entry in params["samplers"].values():
        entry["steps"] = [4]
        entry["particles"] = [20] if entry.get("population") == "particles" else [50]
        entry.pop("dims", None)
        entry.pop("particles_by_dim", None)
    params["run"] = [n for n in params["run"] if params["samplers"][n].get("sampler", n) in SAMPLERS]
    report = BENCHMARKS[params.pop("name")](**params)
    for name in params["run"]:
        assert f"| {name} | 4 |" in report
