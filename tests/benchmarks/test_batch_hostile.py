"""Hostile input to the batch benchmarks: damaged run folders, bad files, stale results, killed merges.

Each test runs filtered back-projection (or zero filling) on a few small slices, so that the suite
stays fast; the engine's behaviour on samplers is the same and is covered by ``test_batch.py``.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from invdiff.batch import Shard, engine, read_rows, run_batch
from invdiff.batch.engine import ROW_FIELDS
from invdiff.batch.folders import CTFolder, FastMRIFolder
from invdiff.data.datasets import mri_brain_fastmri
from invdiff.priors.gmm import GaussianMixture
from invdiff.problems.fastmri import MapsOptions
from invdiff.run import Method
from tests.benchmarks.test_batch import CT_SETTINGS, ROOT, _ct_folder, _ct_prior

pytestmark = pytest.mark.hostile

FBP = {"fbp": Method("fbp", baseline="fbp")}
VIEWS8 = {"views8": CT_SETTINGS["views8"]}


def _fbp(data, out, methods=None, settings=None, **kwargs):
    """Filtered back-projection over a CT folder (no prior)."""
    return run_batch(CTFolder(data), methods or FBP, settings or VIEWS8, out, **kwargs)


def _small(path, volumes: int = 1, slices: int = 2):
    return _ct_folder(path, volumes=volumes, slices=slices, size=16)


# --------------------------------------------------------------------------------------------
# Damaged rows CSVs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["renamed column", "header lost", "header cut"])
def test_a_damaged_csv_header_is_an_error_naming_the_file_and_the_rows_are_kept(tmp_path, damage):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    _fbp(data, out)
    shard = out / "rows" / "shard-0-of-1.csv"
    lines = shard.read_text().splitlines(keepends=True)
    if damage == "renamed column":
        lines[0] = lines[0].replace("method", "metXod")
    elif damage == "header lost":
        lines = lines[1:]
    else:
        lines[0] = lines[0][:20] + "\n"
    shard.write_text("".join(lines))
    damaged = shard.read_bytes()
    with pytest.raises(ValueError, match=r"shard-0-of-1\.csv: the header line .* expected 'setting,method,volume"):
        read_rows(out)
    with pytest.raises(ValueError, match=r"shard-0-of-1\.csv: the header line"):
        _fbp(data, out)
    assert shard.read_bytes() == damaged


@pytest.mark.parametrize(("column", "value", "message"), [
    ("psnr", "abc", r"line 3: column 'psnr' holds 'abc'; expected a number"),
    ("slice", "two", r"line 3: column 'slice' holds 'two'; expected a whole number"),
    ("nfe", "1.5", r"line 3: column 'nfe' holds '1.5'; expected a whole number"),
    (None, None, r"line 3: 3 fields; expected 14"),
])
def test_a_damaged_row_names_the_file_and_line(tmp_path, column, value, message):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    _fbp(data, out)
    shard = out / "rows" / "shard-0-of-1.csv"
    lines = shard.read_text().splitlines(keepends=True)
    if column is None:
        lines[2] = "views8,fbp,vol0.h5\n"
    else:
        fields = lines[2].rstrip("\n").split(",")
        fields[ROW_FIELDS.index(column)] = value
        lines[2] = ",".join(fields) + "\n"
    shard.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"shard-0-of-1\.csv, " + message):
        read_rows(out)
    with pytest.raises(ValueError, match=r"shard-0-of-1\.csv, line 3"):
        _fbp(data, out)


# --------------------------------------------------------------------------------------------
# Degenerate metrics
# --------------------------------------------------------------------------------------------


def _zero_slice_folder(path):
    """Two volumes of a disc and a second slice: zero in ``vol0.h5``, a fainter disc in ``vol1.h5``."""
    path.mkdir(parents=True)
    yy, xx = np.mgrid[:16, :16] / 16 - 0.5
    disc = ((xx**2 + yy**2) < 0.12).astype(np.float32)
    for v, second in enumerate((0 * disc, 0.5 * disc)):
        with h5py.File(path / f"vol{v}.h5", "w") as f:
            f.create_dataset("image", data=np.stack([disc, second]))
    return path


def test_an_exact_reconstruction_of_a_zero_slice_gives_an_infinite_psnr_the_summary_and_report_carry(tmp_path):
    from invdiff.batch.report import write_report

    data, out = _zero_slice_folder(tmp_path / "data"), tmp_path / "out"
    # noise-free views of the zero slice: FBP gives exactly zero, as the reference is
    result = _fbp(data, out, settings={"exact": {"views": 8, "noise_std": 0.0}}, slices=(1, 2))
    row = next(r for r in read_rows(out) if r["volume"] == "vol0.h5")
    assert row["psnr"] == math.inf and math.isnan(row["nmse"]) and row["ssim"] == 1.0
    entry = result.summary["methods"][0]
    assert entry["volumes"]["vol0.h5"]["psnr"] == math.inf and math.isfinite(entry["volumes"]["vol1.h5"]["psnr"])
    assert entry["psnr"] == math.inf and entry["nonfinite"] == {"psnr": 1, "nmse": 1}
    markdown = (out / "summary.md").read_text()
    assert "| exact | fbp | 0 | inf |" in markdown
    assert "PSNR is infinite for 1 of 2 volumes" in markdown and "NMSE is undefined for 1 of 2 volumes" in markdown
    assert json.loads((out / "summary.json").read_text())["methods"][0]["psnr"] == "inf"
    # a rerun (merge from the rows) and the report work on the folder
    assert _fbp(data, out, settings={"exact": {"views": 8, "noise_std": 0.0}}, slices=(1, 2)).done == 0
    assert "| exact | fbp | 0 | inf |" in write_report(out)


# --------------------------------------------------------------------------------------------
# Bad files: each is reported and skipped, the others run, nothing is written into data.root
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> Path:
    """One generated fastMRI-layout brain volume: 2 slices, 32 x 32 images in 64 x 44 k-space, 4 coils."""
    root = tmp_path_factory.mktemp("brain")
    return sorted(mri_brain_fastmri(root, size=32, width=44, coils=4, slab=2).glob("*.h5"))[0]


def _replace(f: h5py.File, key: str, value) -> None:
    del f[key]
    if isinstance(value, str):
        f.create_group(key)
    else:
        f.create_dataset(key, data=value)


BAD_FASTMRI = {
    "max_small.h5": (lambda f: f.attrs.__setitem__("max", 1e-3),
                     r"'max' attribute 0\.001 differs from the maximum of 'reconstruction_rss', 1(\.0)?\b"),
    "max_text.h5": (lambda f: f.attrs.__setitem__("max", "abc"), r"'max' attribute 'abc' is not a number"),
    "max_array.h5": (lambda f: f.attrs.__setitem__("max", np.array([1.0, 2.0])), r"'max' attribute .* not a number"),
    "kspace_group.h5": (lambda f: _replace(f, "kspace", "group"), r"'kspace' is a group, expected a dataset"),
    "kspace_real.h5": (lambda f: _replace(f, "kspace", f["kspace"][()].real), r"'kspace' has dtype float32"),
    "kspace_empty.h5": (lambda f: (_replace(f, "kspace", f["kspace"][:0]),
                                   _replace(f, "reconstruction_rss", f["reconstruction_rss"][:0])),
                        r"'kspace' has no slices"),
    "target_group.h5": (lambda f: _replace(f, "reconstruction_rss", "group"),
                        r"'reconstruction_rss' is a group, expected a dataset"),
    "target_complex.h5": (lambda f: _replace(f, "reconstruction_rss", f["reconstruction_rss"][()].astype(np.complex64)),
                          r"'reconstruction_rss' has dtype complex64; expected real"),
    "target_nan.h5": (lambda f: f["reconstruction_rss"].__setitem__((0, 0, 0), np.nan),
                      r"'reconstruction_rss' holds NaN or infinite values"),
    "header_group.h5": (lambda f: _replace(f, "ismrmrd_header", "group"), r"'ismrmrd_header' is a group"),
    "mask_group.h5": (lambda f: f.create_group("mask"), r"'mask' is a group"),
}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_bad_fastmri_files_are_reported_and_skipped_and_left_unchanged(brain, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(brain, data / "good.h5")
    for name, (damage, _) in BAD_FASTMRI.items():
        shutil.copy(brain, data / name)
        with h5py.File(data / name, "a") as f:
            damage(f)
    before = _digests(data)
    result = run_batch(FastMRIFolder(data, MapsOptions("acs")), {"zero_filled": Method("zero_filled", baseline="zero_filled")},
                       {"4x": {"acceleration": 4, "center_fraction": 0.2}}, tmp_path / "out")
    skipped = {s["file"]: s["error"] for s in result.summary["skipped"]}
    assert set(skipped) == set(BAD_FASTMRI)
    for name, (_, message) in BAD_FASTMRI.items():
        assert re.search(message, skipped[name]) and name in skipped[name], (name, skipped[name])
    assert list(result.summary["methods"][0]["volumes"]) == ["good.h5"]
    assert _digests(data) == before


def test_a_ct_max_attribute_that_disagrees_with_the_image_is_reported_and_skipped(tmp_path):
    data = _small(tmp_path / "data", volumes=2)
    with h5py.File(data / "vol1.h5", "a") as f:
        f.attrs["max"] = 1e-3
    with h5py.File(data / "group.h5", "w") as f:
        f.create_group("image")
    result = _fbp(data, tmp_path / "out")
    skipped = {s["file"]: s["error"] for s in result.summary["skipped"]}
    assert set(skipped) == {"vol1.h5", "group.h5"}
    assert re.search(r"vol1\.h5: the 'max' attribute 0\.001 differs from the maximum of 'image', 0\.\d+", skipped["vol1.h5"])
    assert "'image' is a group, expected a dataset" in skipped["group.h5"]


# --------------------------------------------------------------------------------------------
# Nothing to do is an error; links and folders among the files are reported
# --------------------------------------------------------------------------------------------


def test_an_empty_data_folder_is_an_error_naming_data_root(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("no volumes here")
    with pytest.raises(ValueError, match=r"data\.root: .*data holds no '\*\.h5' files"):
        _fbp(tmp_path / "data", tmp_path / "out")


def test_a_slice_range_that_selects_nothing_is_an_error_naming_data_slices(tmp_path):
    data = _small(tmp_path / "data", volumes=2, slices=3)
    with pytest.raises(ValueError, match=r"data\.slices: \[5, 2\] selects no slice of any volume"):
        _fbp(data, tmp_path / "out", slices=(5, 2))
    # a range beyond a shorter volume's slices skips that volume, saying so
    with h5py.File(data / "short.h5", "w") as f:
        f.create_dataset("image", data=np.ones((1, 16, 16), np.float32))
    result = _fbp(data, tmp_path / "out", slices=(1, 3))
    skipped = {s["file"]: s["error"] for s in result.summary["skipped"]}
    assert skipped == {"short.h5": "data.slices [1, 3] selects none of its 1 slices"}
    assert result.summary["volumes"] == {"vol0.h5": [1, 2], "vol1.h5": [1, 2]}


def test_links_and_folders_named_like_volumes_are_reported_as_skipped(tmp_path):
    data = _small(tmp_path / "data")
    (data / "loop.h5").symlink_to(data / "loop.h5")
    (data / "dangling.h5").symlink_to(tmp_path / "nowhere.h5")
    (data / "folder.h5").mkdir()
    (data / "linked.h5").symlink_to(data / "vol0.h5")
    result = _fbp(data, tmp_path / "out")
    skipped = {s["file"]: s["error"] for s in result.summary["skipped"]}
    assert set(skipped) == {"loop.h5", "dangling.h5", "folder.h5"}
    assert "symbolic link loop" in skipped["loop.h5"]
    assert "dangling symbolic link" in skipped["dangling.h5"] and "nowhere.h5" in skipped["dangling.h5"]
    assert "is a folder, not a file" in skipped["folder.h5"]
    assert sorted(result.summary["volumes"]) == ["linked.h5", "vol0.h5"]
    assert "Skipped files" in (tmp_path / "out" / "summary.md").read_text()


# --------------------------------------------------------------------------------------------
# Resume: a run folder never mixes rows of different runs
# --------------------------------------------------------------------------------------------

REFUSED = r"benchmark\.out_dir: .*out holds a run that differs from this one .*{}.*benchmark\.resume=false"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("change", "message"), [
    ({"methods": {"fbp": Method("fbp", baseline="fbp", params={"filter": "hann"})}},
     r"methods\.fbp\.params\.filter changed: 'ramp' -> 'hann'"),
    ({"settings": {"views8": {"views": 8, "noise_std": 0.1}}}, r"settings\.views8\.noise_std changed: 0\.05 -> 0\.1"),
    ({"seed": 1}, r"seed changed: 0 -> 1"),
    ({"slice_batch": 2}, r"slice_batch changed: 1 -> 2"),
    ({"slices": (0, 1)}, r"data\.slices changed: None -> \[0, 1\]"),
])
def test_a_resume_with_other_parameters_refuses_naming_what_changed(tmp_path, change, message):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    _fbp(data, out)
    before = _snapshot(out)
    with pytest.raises(ValueError, match=REFUSED.format(message)):
        _fbp(data, out, **change)
    assert _snapshot(out) == before


def test_a_resume_on_another_data_root_or_a_changed_file_refuses(tmp_path):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    _fbp(data, out)
    other = shutil.copytree(data, tmp_path / "other")
    with pytest.raises(ValueError, match=REFUSED.format(r"data\.root changed: '.*data' -> '.*other'")):
        _fbp(other, out)
    with h5py.File(data / "vol0.h5", "a") as f:
        f["image"][0] = 0.5 * f["image"][0]
    with pytest.raises(ValueError, match=REFUSED.format(r"files\.vol0\.h5\.(size|mtime_ns) changed")):
        _fbp(data, out)


def test_a_resume_with_another_mri_noise_level_refuses(brain, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    shutil.copy(brain, data / brain.name)
    methods = {"zero_filled": Method("zero_filled", baseline="zero_filled")}
    settings = {"4x": {"acceleration": 4, "center_fraction": 0.2}}
    run_batch(FastMRIFolder(data, MapsOptions("acs")), methods, settings, out)
    with pytest.raises(ValueError, match=REFUSED.format(r"noise_std changed: None -> 0\.01")):
        run_batch(FastMRIFolder(data, MapsOptions("acs"), noise_std=0.01), methods, settings, out)
    with pytest.raises(ValueError, match=REFUSED.format(r"coil_maps changed: 'acs' -> 'oracle'")):
        run_batch(FastMRIFolder(data, MapsOptions("oracle")), methods, settings, out)


def test_a_new_method_or_setting_resumes_the_others_and_a_new_prior_refuses_the_samplers(tmp_path):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    _fbp(data, out)
    fbp_rows = read_rows(out)
    hann = {**FBP, "hann": Method("hann", baseline="fbp", params={"filter": "hann"})}
    assert _fbp(data, out, hann, {**VIEWS8, "views12": {"views": 12, "noise_std": 0.05}}).done == 4
    assert [r for r in read_rows(out) if r["method"] == "fbp" and r["setting"] == "views8"] == fbp_rows
    dds = {"dds": Method("dds", sampler="dds", steps=2)}
    _fbp(data, out, dds, prior=_ct_prior(16))
    with pytest.raises(ValueError, match=REFUSED.format(r"methods\.dds\.prior\.sha256 changed")):
        _fbp(data, out, {**FBP, **dds}, prior=GaussianMixture(torch.full((1, 256), 0.2), 0.09 * torch.eye(256)[None],
                                                                shape=(1, 16, 16)))
    with pytest.raises(ValueError, match=REFUSED.format(r"methods\.dds\.precision changed: 'fp32' -> 'bf16'")):
        _fbp(data, out, dds, prior=_ct_prior(16), precision="bf16")
    # the baselines depend on neither the prior nor its precision
    assert _fbp(data, out, FBP, prior=_ct_prior(24), precision="bf16").done == 0


def test_resume_false_starts_afresh_in_a_numbered_folder_and_a_sharded_one_refuses(tmp_path):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    _fbp(data, out)
    before = _snapshot(out)
    fresh = _fbp(data, out, seed=1, resume=False)
    assert fresh.out_dir == tmp_path / "out-2" and fresh.done == 2 and _snapshot(out) == before
    assert _fbp(data, out, seed=2, resume=False).out_dir == tmp_path / "out-3"
    with pytest.raises(ValueError, match=r"benchmark\.resume=false: .*shards"):
        _fbp(data, tmp_path / "sharded", resume=False, shard=Shard(0, 2))


def test_a_folder_with_rows_and_no_record_of_its_run_refuses(tmp_path):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    _fbp(data, out)
    (out / "run.json").unlink()
    with pytest.raises(ValueError, match=r"benchmark\.out_dir: .*out holds rows but no run\.json"):
        _fbp(data, out)


def test_a_second_process_on_the_same_shard_fails_fast(tmp_path):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    (out / "rows").mkdir(parents=True)
    with (out / "rows" / ".shard-0-of-1.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match=r"shard 0 of 1 of .*out is being run by another process"):
            _fbp(data, out)
    assert _fbp(data, out).done == 2


# --------------------------------------------------------------------------------------------
# A method that fails everywhere fails the command
# --------------------------------------------------------------------------------------------


def test_a_method_that_failed_on_every_slice_ends_the_command_with_an_error_after_the_summary(tmp_path):
    data, out = _small(tmp_path / "data"), tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "benchmark=ct", f"data.root={data}", f"benchmark.out_dir={out}",
         "benchmark.run=[fbp]", "benchmark.settings.views8.views=0", f"hydra.run.dir={out}/hydra"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "fbp failed on every slice of views8" in done.stderr and "n_views" in done.stderr
    assert "| views30 | fbp | 0 |" in done.stdout  # the summary is printed and written first
    summary = json.loads((out / "summary.json").read_text())
    assert {f["setting"] for f in summary["failed"]} == {"views8"} and len(summary["failed"]) == 2


# --------------------------------------------------------------------------------------------
# Killed while merging: a resumed run gives the uninterrupted run's files
# --------------------------------------------------------------------------------------------

TWO_SETTINGS = {"views8": CT_SETTINGS["views8"], "limited": CT_SETTINGS["limited"]}


class _Killed(BaseException):
    """A process killed at a write: no handler catches it, and nothing after it runs."""


def _without_timings(out: Path) -> tuple[list[dict], dict]:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seconds_per_slice"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    with (out / "rows.csv").open() as f:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    return rows, strip(json.loads((out / "summary.json").read_text()))


def _submissions(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "reconstructions").rglob("*.h5"))}


def _assert_as_uninterrupted(out: Path, full: Path) -> None:
    assert _without_timings(out) == _without_timings(full)
    assert _submissions(out) == _submissions(full) and len(_submissions(full)) == 4
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def uninterrupted(tmp_path) -> tuple[Path, Path]:
    data = _small(tmp_path / "data", volumes=2)
    _fbp(data, tmp_path / "full", settings=TWO_SETTINGS)
    return data, tmp_path / "full"


@pytest.mark.parametrize("target", ["rows.csv", "summary.json", "summary.md", ".sources.json"])
def test_killed_while_writing_the_summary_a_rerun_gives_the_uninterrupted_files(uninterrupted, tmp_path, monkeypatch,
                                                                                  target):
    data, full = uninterrupted
    out = tmp_path / "out"
    write = engine.atomic_write_text

    def dies_at_target(path, text, **kwargs):
        if Path(path).name == target:
            raise _Killed(path)
        write(path, text, **kwargs)

    monkeypatch.setattr(engine, "atomic_write_text", dies_at_target)
    with pytest.raises(_Killed):
        _fbp(data, out, settings=TWO_SETTINGS)
    monkeypatch.undo()
    assert _fbp(data, out, settings=TWO_SETTINGS).done == 0
    _assert_as_uninterrupted(out, full)


@pytest.mark.parametrize("survivors", [0, 2])
def test_killed_while_writing_the_submission_files_a_rerun_gives_the_uninterrupted_files(uninterrupted, tmp_path,
                                                                                         monkeypatch, survivors):
    data, full = uninterrupted
    out = tmp_path / "out"
    write = engine.write_submission
    written = []

    def dies_midway(path, recon, indices):
        if len(written) == survivors:  # a partial temporary file is left, as a killed process leaves it
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(f".{path.name}.tmp99999").write_bytes(b"\x89HDF\r\n\x1a\n partial")
            raise _Killed(path)
        write(path, recon, indices)
        written.append(path)

    monkeypatch.setattr(engine, "write_submission", dies_midway)
    with pytest.raises(_Killed):
        _fbp(data, out, settings=TWO_SETTINGS)
    monkeypatch.undo()
    assert len(_submissions(out)) == survivors  # the file being written is not in place
    assert _fbp(data, out, settings=TWO_SETTINGS).done == 0
    _assert_as_uninterrupted(out, full)


def test_a_stale_submission_file_is_rewritten(uninterrupted, tmp_path):
    data, full = uninterrupted
    out = tmp_path / "out"
    _fbp(data, out, settings=TWO_SETTINGS)
    stale = out / "reconstructions" / "views8" / "fbp" / "vol0.h5"
    with h5py.File(stale, "w") as f:  # another run's file, or one from slices redone since
        f.create_dataset("reconstruction", data=np.zeros((2, 16, 16), np.float32))
    assert _fbp(data, out, settings=TWO_SETTINGS).done == 0
    _assert_as_uninterrupted(out, full)
    # a slice redone after its row was lost: the volume's file is rebuilt from the new slice
    shard = out / "rows" / "shard-0-of-1.csv"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(line for line in lines if not line.startswith("views8,fbp,vol1.h5,1,")))
    slice_file = out / "slices" / "views8" / "fbp" / "vol1" / "0001.npy"
    np.save(slice_file, np.ones((16, 16), np.float32))
    files = {name: out / "reconstructions" / "views8" / "fbp" / name for name in ("vol0.h5", "vol1.h5")}
    before = {name: path.stat().st_mtime_ns for name, path in files.items()}
    assert _fbp(data, out, settings=TWO_SETTINGS).done == 1
    after = {name: path.stat().st_mtime_ns for name, path in files.items()}
    assert after["vol0.h5"] == before["vol0.h5"] and after["vol1.h5"] != before["vol1.h5"]
    _assert_as_uninterrupted(out, full)


def test_a_damaged_manifest_is_an_error_naming_it_and_a_damaged_sources_record_rebuilds_the_files(uninterrupted,
                                                                                                  tmp_path):
    data, full = uninterrupted
    out = tmp_path / "out"
    _fbp(data, out, settings=TWO_SETTINGS)
    (out / "reconstructions" / ".sources.json").write_text("{not json")
    assert _fbp(data, out, settings=TWO_SETTINGS).done == 0
    _assert_as_uninterrupted(out, full)
    (out / "rows" / "manifest-0-of-1.json").write_text('{"volumes": ')
    with pytest.raises(ValueError, match=r"manifest-0-of-1\.json: not a shard manifest"):
        engine.merge(out)


def test_a_nan_in_unsampled_k_space_gives_error_rows_not_scores(brain, tmp_path):
    """One NaN in a k-space corner the 4x mask leaves out: CG-SENSE used to stop at once, as if
    converged, and score the all-zero image; now each slice of that file is an error row."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(brain, data / "nan.h5")
    with h5py.File(data / "nan.h5", "a") as f:
        f["kspace"][0, 0, 0, -1] = np.nan  # first slice, coil and readout sample, last phase-encode line
    methods = {"cg_sense": Method("cg_sense", baseline="cg", params={"max_iter": 3})}
    result = run_batch(FastMRIFolder(data, MapsOptions("acs")), methods,
                       {"4x": {"acceleration": 4, "center_fraction": 0.2}}, tmp_path / "out")
    rows = [r for r in read_rows(tmp_path / "out") if r["volume"] == "nan.h5"]
    first = [r for r in rows if int(r["slice"]) == 0]
    assert first and all(r["error"] and "finite" in r["error"] for r in first), first
    assert all(not r["psnr"] or r["error"] for r in first)
    assert result.summary["failed"] or any(r["error"] for r in rows)
