"""``scripts/reconstruct.py`` end to end, at tiny size on the CPU, for every task."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TASK_SAMPLER = {"mri": "dds", "ct": "dds", "ct_prelog": "reddiff", "inpaint": "dds", "sr": "dds", "phase": "dps"}


def _tiny(task: str) -> list[str]:
    """16 x 16 phantoms with the phantom Gaussian prior: every code path, in seconds."""
    return [f"task={task}", "task.size=16", "task.image=phantom", "prior=phantom", "prior.n_train=60",
            "prior.rank=16", f"prior.complex_={str(task == 'mri').lower()}"]


def _run(tmp_path: Path, *overrides: str, run_dir: Path | None = None) -> subprocess.CompletedProcess:
    run_dir = run_dir or tmp_path / "run"
    args = [
        sys.executable, "scripts/reconstruct.py", f"hydra.run.dir={run_dir}", f"data_root={tmp_path / 'data'}",
        "sampler.steps=4", "progress=false", *overrides,
    ]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("task", sorted(TASK_SAMPLER))
def test_every_task_runs_end_to_end(task, tmp_path):
    sampler = TASK_SAMPLER[task]
    proc = _run(tmp_path, *_tiny(task), f"sampler={sampler}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    for name in ("reconstruction.npy", "baseline.npy", "metrics.json", "figure.png", "config.yaml"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["sampler"] == sampler and metrics["nfe"] >= 4
    for key in ("psnr", "ssim", "nmse"):
        assert np.isfinite(metrics["reconstruction"][key]) and np.isfinite(metrics["baseline_metrics"][key])
    recon = np.load(run / "reconstruction.npy")
    assert recon.shape[-2:] == (16, 16)
    assert np.iscomplexobj(recon) == (task == "mri")
    assert "size: 16" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("sampler", ["reddiff", "smc_ensemble", "tds"])
def test_every_posterior_sampler_runs_a_task(sampler, tmp_path):
    proc = _run(tmp_path, *_tiny("mri"), f"sampler={sampler}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["sampler"] == sampler and np.isfinite(metrics["reconstruction"]["psnr"])
    assert np.load(tmp_path / "run" / "reconstruction.npy").shape == (1, 1, 16, 16)


def test_same_seed_same_output_and_no_silent_overwrite(tmp_path):
    first = _run(tmp_path, *_tiny("ct"), "seed=3", run_dir=tmp_path / "a")
    second = _run(tmp_path, *_tiny("ct"), "seed=3", run_dir=tmp_path / "b")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "reconstruction.npy"), np.load(tmp_path / "b" / "reconstruction.npy"))
    again = _run(tmp_path, *_tiny("ct"), "seed=3", run_dir=tmp_path / "a")
    assert again.returncode != 0
    assert "already holds" in again.stderr and "overwrite=true" in again.stderr
    forced = _run(tmp_path, *_tiny("ct"), "seed=4", "overwrite=true", run_dir=tmp_path / "a")
    assert forced.returncode == 0, forced.stderr[-2000:]


def test_unknown_task_lists_available_tasks(tmp_path):
    proc = _run(tmp_path, "task=tomosynthesis")
    assert proc.returncode != 0
    assert "Available options" in proc.stderr and "mri" in proc.stderr


def test_dds_refuses_a_nonlinear_task(tmp_path):
    proc = _run(tmp_path, *_tiny("phase"), "sampler=dds")
    assert proc.returncode != 0
    assert "dds" in proc.stderr.lower() and "dps" in proc.stderr.lower()


@pytest.mark.parametrize("task, sampler, message", [
    ("ct", "diffusion_mbir", "needs a volume.*task=ct3d or task=mri3d"),
    ("phase", "smc_ensemble", "LinearOperator.*tds, dps or reddiff"),
])
def test_a_sampler_refuses_a_task_it_cannot_solve(task, sampler, message, tmp_path):
    proc = _run(tmp_path, *_tiny(task), f"sampler={sampler}")
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr[-2000:]


def test_default_mri_command_with_the_shipped_prior(tmp_path):
    """The README's main command (fewer steps): real brain anatomy, the trained prior."""
    proc = _run(tmp_path, "task=mri", "sampler=dds", "sampler.steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["nfe"] == 3
    assert np.load(tmp_path / "run" / "reconstruction.npy").shape == (1, 1, 64, 64)
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "mri_brain_64" in config and "image: mri_brain" in config


@pytest.fixture(scope="module")
def fastmri_files(tmp_path_factory) -> dict[str, Path]:
    """A fully sampled and a prospective (masked, no reference) generated fastMRI file, 32 x 32 images."""
    from invdiff.data.datasets import mri_brain_fastmri

    root = tmp_path_factory.mktemp("fastmri")
    common = {"size": 32, "width": 40, "coils": 4, "slab": 8}
    return {"full": sorted(mri_brain_fastmri(root, **common).glob("*.h5"))[0],
            "test": sorted(mri_brain_fastmri(root, acceleration=4, **common).glob("*.h5"))[0]}


def test_own_fastmri_files_with_and_without_a_reference(fastmri_files, tmp_path):
    full = _run(tmp_path, "task=fastmri", f"task.file={fastmri_files['full']}", "task.slice=3", "sampler.steps=3",
                run_dir=tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["task"] == "fastmri" and np.isfinite(metrics["reconstruction"]["psnr"])
    assert metrics["problem"]["slices"] == [3] and metrics["problem"]["noise_rule"] == "readout_background"
    recon = np.load(tmp_path / "full" / "reconstruction.npy")
    assert recon.shape == (1, 1, 32, 32) and np.iscomplexobj(recon)  # the header's reconstruction size
    test = _run(tmp_path, "task=fastmri", f"task.file={fastmri_files['test']}", "task.slice=-1", "sampler.steps=3",
                run_dir=tmp_path / "test")
    assert test.returncode == 0, test.stderr[-3000:]
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["reconstruction"] is None and metrics["baseline_metrics"] is None
    assert metrics["problem"]["prospective"] is True and metrics["problem"]["slices"] == [7]
    for name in ("reconstruction.npy", "baseline.npy", "figure.png", "config.yaml"):
        assert (tmp_path / "test" / name).is_file(), name
    assert "dds | cg" in test.stdout


def test_bad_fastmri_input_names_the_file_and_key(fastmri_files, tmp_path):
    import h5py

    out = _run(tmp_path, "task=fastmri", f"task.file={fastmri_files['full']}", "task.slice=8")
    assert out.returncode != 0 and "slice 8 is out of range for a volume of 8 slices" in out.stderr
    assert fastmri_files["full"].name in out.stderr
    no_kspace = tmp_path / "no_kspace.h5"
    with h5py.File(no_kspace, "w") as f:
        f.create_dataset("image", data=np.zeros((1, 4, 4), np.float32))
    out = _run(tmp_path, "task=fastmri", f"task.file={no_kspace}", run_dir=tmp_path / "b")
    assert out.returncode != 0 and "no_kspace.h5: no 'kspace' dataset" in out.stderr
    out = _run(tmp_path, "task=fastmri", run_dir=tmp_path / "c")
    assert out.returncode != 0 and "task.file" in out.stderr
