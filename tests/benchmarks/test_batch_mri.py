"""The fastMRI batch benchmark on generated fastMRI-layout files: references or none, no oracle, any prior."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from invdiff.batch import run_batch
from invdiff.batch.folders import FastMRIFolder
from invdiff.batch.report import mask_strips, read_acquisitions, write_report
from invdiff.benchmarks.volumes import build_methods
from invdiff.data.datasets import mri_brain_fastmri
from invdiff.priors.packaged import WEIGHTS, load_packaged
from invdiff.problems.fastmri import MapsOptions
from operators import line_budget, volume_seed

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"zero_filled": {"baseline": "zero_filled"}, "cg_sense": {"baseline": "cg", "params": {"max_iter": 20}},
           "dds": {"sampler": "dds", "steps": 3, "schedule": "karras", "params": {"cg_steps": 5, "eta": 1.0}}}
SETTINGS = {"4x": {"acceleration": 4, "center_fraction": 0.2}, "8x": {"acceleration": 8}}
"""At 4x, 9 ACS columns of 44 (fastMRI's 30 of 372 are 0.08) give maps good enough to beat zero filling;
8x has fastMRI's 4 % centre, 2 columns, too few for useful maps at this size."""


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """Brain volumes of 8 slices: 32 x 32 images in 64 x 44 k-space (2x readout, a wider phase-encode
    field of view, as fastMRI's 640 x 372 k-space has 320 x 320 targets), 4 coils; fully sampled and
    prospective (4x, masked k-space and its mask, no reference)."""
    root = tmp_path_factory.mktemp("generated")
    common = {"size": 32, "width": 44, "coils": 4, "slab": 8}
    return {"full": mri_brain_fastmri(root, **common), "test": mri_brain_fastmri(root, acceleration=4, **common)}


def _batch(data: Path, out: Path, **kwargs):
    maps = MapsOptions("acs", cache_dir=out / "coil_maps")
    return run_batch(FastMRIFolder(data, maps), build_methods(METHODS), SETTINGS, out,
                     prior=load_packaged("mri_brain_64"), **kwargs)


def _recon(out: Path, setting: str, method: str, name: str) -> np.ndarray:
    with h5py.File(out / "reconstructions" / setting / method / name) as f:
        return f["reconstruction"][()]


def test_fully_sampled_and_prospective_files_in_one_folder(generated, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(generated["full"].glob("*.h5")):
        shutil.copy(path, data / path.name)
    prospective = sorted(generated["test"].glob("*.h5"))[0]
    shutil.copy(prospective, data / "challenge_000.h5")
    result = _batch(data, tmp_path / "out")
    summary = result.summary
    assert not summary["failed"] and not summary["skipped"]
    assert summary["unscored_volumes"] == ["challenge_000.h5"]
    by = {(e["setting"], e["method"]): e for e in summary["methods"]}
    assert len(by) == 6 and all(e["slices"] == 16 and e["unscored"] == 8 and len(e["volumes"]) == 2 for e in by.values())
    assert by[("4x", "cg_sense")]["psnr"] > by[("4x", "zero_filled")]["psnr"] + 3
    assert by[("4x", "dds")]["psnr"] > by[("4x", "zero_filled")]["psnr"]  # 3 steps only
    for setting in SETTINGS:
        for method in METHODS:
            for name in ("brain_test_000.h5", "brain_test_001.h5", "challenge_000.h5"):
                recon = _recon(tmp_path / "out", setting, method, name)
                assert recon.shape == (8, 32, 32) and recon.dtype == np.float32 and np.isfinite(recon).all()
    assert by[("4x", "dds")]["nfe"] == 3
    # a prospective file has its own mask: the same reconstruction under every setting
    np.testing.assert_array_equal(_recon(tmp_path / "out", "4x", "cg_sense", "challenge_000.h5"),
                                  _recon(tmp_path / "out", "8x", "cg_sense", "challenge_000.h5"))
    rows = list(csv.DictReader((tmp_path / "out" / "rows.csv").open()))
    assert {r["psnr"] for r in rows if r["volume"] == "challenge_000.h5"} == {"nan"}
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "(+8 not scored)" in text and "1 volumes have no reference" in text and "`challenge_000.h5`" in text
    # each slice's coil maps from the ACS lines of each setting, cached for a resumed run
    assert len(list((tmp_path / "out" / "coil_maps").glob("*.npy"))) == 3 * 8 + 2 * 8


def test_reconstructions_ignore_the_reference_and_scale_with_the_data(generated, tmp_path):
    source = sorted(generated["full"].glob("*.h5"))[1]
    variants = {"same": 1.0, "other_reference": 1.0, "scaled": 3.7}
    for variant, c in variants.items():
        (tmp_path / variant).mkdir()
        path = tmp_path / variant / source.name
        shutil.copy(source, path)
        with h5py.File(path, "a") as f:
            if variant == "other_reference":
                f["reconstruction_rss"][...] = np.random.default_rng(1).random(f["reconstruction_rss"].shape)
                f.attrs["max"] = 1.0
            f["kspace"][...] = f["kspace"][()] * np.complex64(c)
        _batch(tmp_path / variant, tmp_path / f"out_{variant}", slices=(2, 6), slice_batch=2)
    for method in ("cg_sense", "dds"):
        same = _recon(tmp_path / "out_same", "8x", method, source.name)
        np.testing.assert_array_equal(_recon(tmp_path / "out_other_reference", "8x", method, source.name), same)
        np.testing.assert_allclose(_recon(tmp_path / "out_scaled", "8x", method, source.name), 3.7 * same,
                                   rtol=2e-3, atol=2e-3 * 3.7 * same.max())


def _cli(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "scripts/benchmark.py", "benchmark=mri", f"data.root={data}", f"benchmark.out_dir={out}",
            "benchmark.run=[cg_sense,dds]", "benchmark.methods.dds.steps=2", "data.slices=[0,1]",
            f"hydra.run.dir={out}/hydra", *extra]


def _metric_columns(out: Path) -> list[tuple]:
    return [tuple(r[k] for k in ("setting", "method", "volume", "slice", "psnr", "ssim", "nmse"))
            for r in csv.DictReader((out / "rows.csv").open())]


@pytest.mark.slow
def test_benchmark_mri_with_a_checkpoint_prior_works_like_the_default(generated, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    default = subprocess.run(_cli(tmp_path / "default", generated["full"]), cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert default.returncode == 0, default.stderr[-3000:]
    unet = subprocess.run(_cli(tmp_path / "unet", generated["full"], "prior=unet",
                               f"prior.path={WEIGHTS / 'mri_brain_64.safetensors'}"),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert unet.returncode == 0, unet.stderr[-3000:]
    assert _metric_columns(tmp_path / "unet") == _metric_columns(tmp_path / "default")
    assert len(_metric_columns(tmp_path / "default")) == 2 * 2 * 2  # settings x methods x volumes
    assert "Coil maps from the ACS lines" in default.stdout


ADS = {"sampler": "ads", "steps": 4, "schedule": "karras",
       "params": {"num_particles": 2, "guidance": "dds", "cg_steps": 3, "eta": 1.0, "window": [0.0, 1.0]}}


def test_active_setting_runs_the_active_methods_and_writes_each_slices_order(generated, tmp_path):
    """Under an active setting only ADS runs, from the equispaced mask's centre band and budget; the
    same ADS on a fixed setting reconstructs from that mask and writes it, all held from the start."""
    data = tmp_path / "data"
    data.mkdir()
    volume = sorted(generated["full"].glob("*.h5"))[0]
    shutil.copy(volume, data / volume.name)
    shutil.copy(sorted(generated["test"].glob("*.h5"))[0], data / "challenge_000.h5")
    settings = {"4x": SETTINGS["4x"], "ads4x": {**SETTINGS["4x"], "mask_kind": "active"}}
    out = tmp_path / "out"
    result = run_batch(FastMRIFolder(data, MapsOptions("acs", cache_dir=out / "coil_maps")),
                       build_methods({"dds": METHODS["dds"], "ads": ADS}), settings, out,
                       prior=load_packaged("mri_brain_64"), slices=[0, 1])
    ran = {(e["setting"], e["method"]) for e in result.summary["methods"]}
    assert ran == {("4x", "dds"), ("4x", "ads"), ("ads4x", "ads")}
    # the prospective file has no fully sampled k-space to choose lines from: an error row, named
    failed = [f for f in result.summary["failed"] if f["setting"] == "ads4x"]
    assert [f["volume"] for f in failed] == ["challenge_000.h5"]
    assert "mask_kind 'active' chooses lines of a fully sampled file" in failed[0]["error"]
    budget, centre = line_budget((64, 44), 4, 0.2, seed=volume_seed(volume.name))
    record = json.loads((out / "acquisitions" / "ads4x" / "ads" / volume.stem / "0000.json").read_text())
    first = (44 - centre + 1) // 2
    assert len(record["order"]) == len(set(record["order"])) == budget and record["grid"] == [44]
    assert record["order"][:centre] == list(range(first, first + centre)) and record["unit"] == "lines"
    assert record["acquired_at"][:centre] == [-1] * centre and min(record["acquired_at"][centre:]) >= 0
    fixed = json.loads((out / "acquisitions" / "4x" / "ads" / volume.stem / "0000.json").read_text())
    assert set(record["order"][:centre]) <= set(fixed["order"]) and fixed["acquired_at"] == [-1] * len(fixed["order"])
    # the report draws the mean acquired masks: a figure and a text strip per setting
    write_report(out)
    assert (out / "acquisitions.png").stat().st_size > 0
    strips = {line.split("|")[0].split()[0]: line.split("|")[1] for line in mask_strips(read_acquisitions(out)).splitlines()}
    assert all(strips["4x"][u] != " " for u in fixed["order"])  # the prospective file's own mask beside it
    assert [i for i, c in enumerate(strips["ads4x"]) if c != " "] == sorted(record["order"])
