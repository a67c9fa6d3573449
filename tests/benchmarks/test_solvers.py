"""The unconditional-solver benchmark end to end on a tiny GMM prior, and its shipped config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from invdiff.benchmarks import BENCHMARKS
from invdiff.benchmarks.solvers import CSV_FIELDS, solvers_benchmark, steps_for_nfe
from invdiff.samplers import UNCONDITIONAL
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _exact(denoiser, sigmas, *, shape, generator, **params):
    """A perfect solver: exact prior samples."""
    return denoiser.sample(shape[0], generator=generator), {"nfe": len(sigmas) - 1}


def _config(tmp_path, **solvers):
    return dict(out_dir=str(tmp_path), dims=[4], seeds=[0, 1], nfe=[6, 20], num_samples=300, projections=32,
                floor_repeats=2, solvers=solvers, run=list(solvers), limit={"sampler": "unipc", "steps": 80})


def test_steps_for_nfe():
    assert [steps_for_nfe(n, "per_step") for n in (5, 10, 20, 50)] == [5, 10, 20, 50]
    # Heun: 2n - 1 evaluations for n steps ending at 0, the most steps within the budget
    assert [steps_for_nfe(n, "heun") for n in (5, 10, 20, 50)] == [3, 5, 10, 25]


def test_benchmark_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(UNCONDITIONAL, "exact", _exact)
    cfg = _config(tmp_path, ddim={"params": {"eta": 0.0}}, heun={"evaluations": "heun"},
                  unipc={"params": {"order": 3}}, deis={}, exact={})
    report = solvers_benchmark(**cfg)
    print(report)
    assert "| solver | NFE 6 | NFE 20 |" in report and "| exact samples (floor) |" in report
    assert "| ODE limit (unipc, 80 steps) |" in report
    # CSV: one row per seed (2), solver (5) and budget (2).
    with open(tmp_path / "solvers.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and list(rows[0]) == CSV_FIELDS
    heun = {(int(r["target_nfe"]), int(r["steps"]), int(r["nfe"])) for r in rows if r["solver"] == "heun"}
    assert heun == {(6, 3, 5), (20, 10, 19)}
    data = json.loads((tmp_path / "solvers.json").read_text())
    assert set(data) == {"config", "seconds", "rows", "summary"} and len(data["summary"]) == 10
    summary = {(s["solver"], s["target_nfe"]): s for s in data["summary"]}
    # Exact samples score about the floor; a deterministic solver approaches its ODE limit with the budget.
    for n in (6, 20):
        assert 0.6 < summary[("exact", n)]["ratio"] < 1.6
    for name in ("ddim", "heun", "unipc", "deis"):
        assert summary[(name, 20)]["rmse"] < summary[(name, 6)]["rmse"]
    assert summary[("unipc", 20)]["rmse"] < summary[("deis", 20)]["rmse"] < summary[("ddim", 20)]["rmse"]
    for row in data["rows"]:
        assert row["sw"] == pytest.approx(row["ratio"] * row["floor"])
    assert (tmp_path / "solvers.md").read_text() == report + "\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_entries_stop_before_any_work(tmp_path):
    cfg = _config(tmp_path, ddim={}, langevin={})
    message = r"'langevin'.*not registered in invdiff.samplers.UNCONDITIONAL.*deis.*unipc"
    with pytest.raises(ValueError, match=message):
        solvers_benchmark(**cfg)
    with pytest.raises(ValueError, match="no entry under solvers"):
        solvers_benchmark(**{**cfg, "run": ["ddim", "missing"]})
    with pytest.raises(ValueError, match=r"solvers.ddim.evaluations"):
        solvers_benchmark(**{**cfg, "solvers": {"ddim": {"evaluations": "twice"}}, "run": ["ddim"]})
    assert not list(tmp_path.iterdir())


def test_default_config_runs_with_tiny_overrides(tmp_path):
    """The shipped config's keys match the function; every entry in it runs."""
    overrides = ["benchmark=solvers", f"benchmark.out_dir={tmp_path}", "benchmark.dims=[2]", "benchmark.seeds=[0]",
                 "benchmark.nfe=[3]", "benchmark.num_samples=50", "benchmark.projections=8",
                 "benchmark.floor_repeats=1", "benchmark.limit.steps=10"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose(config_name="benchmark", overrides=overrides)
    params = OmegaConf.to_container(cfg.benchmark, resolve=True)
    params["run"] = list(params["solvers"])
    report = BENCHMARKS[params.pop("name")](**params)
    for name in params["run"]:
        assert f"| {name} | 2 | 3 |" in report
