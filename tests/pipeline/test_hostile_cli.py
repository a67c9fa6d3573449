"""Hostile command lines for the scripts: a refused run leaves the earlier run as it was, bad
values name their config key."""

import subprocess
import sys
from pathlib import Path

import pytest

from invdiff.run import OUTPUTS
from tests.pipeline.test_reconstruct import ROOT, _run, _tiny


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _earlier_run(run_dir: Path) -> None:
    """A run directory as a finished run leaves it: its outputs and Hydra's ``.hydra/``."""
    for name in OUTPUTS:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(f"earlier {name}".encode())
    (run_dir / ".hydra").mkdir()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).write_text(f"earlier {name}\n")


@pytest.mark.hostile
def test_refused_overwrite_leaves_the_earlier_run_and_its_hydra_folder(tmp_path):
    run_dir = tmp_path / "run"
    _earlier_run(run_dir)
    before = _snapshot(run_dir)
    refused = _run(tmp_path, *_tiny("ct"), "seed=7", run_dir=run_dir)
    assert refused.returncode != 0
    assert "already holds" in refused.stderr and "overwrite=true" in refused.stderr
    assert _snapshot(run_dir) == before
    forced = _run(tmp_path, *_tiny("ct"), "seed=7", "overwrite=true", run_dir=run_dir)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "seed=7" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert (run_dir / "metrics.json").read_bytes() != before["metrics.json"]


@pytest.mark.hostile
def test_refused_multirun_leaves_the_earlier_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, "scripts/reconstruct.py", "-m", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${seed}", f"data_root={tmp_path / 'data'}", "sampler.steps=2", "progress=false",
            *_tiny("ct"), "seed=1,2"]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    for seed in ("1", "2"):
        assert (sweep / seed / "reconstruction.npy").is_file()
        assert (sweep / seed / ".hydra" / "config.yaml").is_file()
    before = _snapshot(sweep)
    args[args.index("sampler.steps=2")] = "sampler.steps=3"
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0
    assert "already holds" in again.stderr and "overwrite=true" in again.stderr
    assert _snapshot(sweep) == before


@pytest.mark.hostile
def test_steps_not_a_number_names_the_key(tmp_path):
    proc = _run(tmp_path, "sampler.steps=abc")
    assert proc.returncode != 0
    assert "sampler.steps: expected a positive integer, got 'abc'" in proc.stderr, proc.stderr[-2000:]
