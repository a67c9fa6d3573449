"""Batch benchmarks: kill and resume, shards, bad files, torchrun and the submitit launcher, fastMRI metrics."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from invdiff.batch import Shard, read_rows, run_batch, slice_metrics, summarise
from invdiff.batch.engine import ROW_FIELDS
from invdiff.batch.folders import CTFolder
from invdiff.benchmarks.volumes import build_methods
from invdiff.metrics import ssim
from invdiff.priors.base import Denoiser
from invdiff.priors.gmm import GaussianMixture
from invdiff.run import Method

ROOT = Path(__file__).resolve().parents[2]
METRICS = ("psnr", "ssim", "nmse", "sq_error", "sq_reference", "pixels", "data_max", "nfe", "error")

CT_SETTINGS = {"views8": {"views": 8, "noise_std": 0.05}, "limited": {"views": 12, "angle_range": 90, "noise_std": 0.05}}


def _ct_folder(path: Path, volumes: int = 2, slices: int = 3, size: int = 24) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    for v in range(volumes):
        images = np.stack([
            ((xx - 0.1 * g.standard_normal()) ** 2 + yy**2 < 0.12).astype(np.float32) * (0.5 + 0.5 * g.random())
            for _ in range(slices)
        ])
        with h5py.File(path / f"vol{v}.h5", "w") as f:
            f.create_dataset("image", data=images)
    return path


def _ct_prior(size: int = 24) -> GaussianMixture:
    """An exact Gaussian prior of ``size x size`` images (mean 0.3, std 0.3): cheap and fixed-size."""
    d = size * size
    return GaussianMixture(torch.full((1, d), 0.3), 0.09 * torch.eye(d)[None], shape=(1, size, size))


def _ct_methods() -> dict[str, Method]:
    """FBP and a sampler that draws from its generator, so that seeding by key (not by order) is tested."""
    return build_methods({"fbp": {"baseline": "fbp"}, "dds": {"sampler": "dds", "steps": 2, "params": {"eta": 1.0}}})


def _run(data: Path, out: Path, settings=None, **kwargs):
    return run_batch(CTFolder(data), _ct_methods(), settings or CT_SETTINGS, out, prior=_ct_prior(), **kwargs)


def _metric_rows(out: Path) -> list[dict]:
    return [{k: r[k] for k in ("setting", "method", "volume", "slice", *METRICS)} for r in read_rows(out)]


def _overall(summary: dict) -> list[tuple]:
    return [(e["setting"], e["method"], e["psnr"], e["psnr_std"], e["ssim"], e["nmse"], e["slices"])
            for e in summary["methods"]]


@pytest.mark.hostile
def test_kill_and_resume_gives_the_uninterrupted_summary(tmp_path):
    data = _ct_folder(tmp_path / "data")
    full = _run(data, tmp_path / "full", seed=3)
    assert not full.summary["failed"] and len(full.summary["methods"]) == 4
    # "killed" after 2 problems, with a torn row at the end of the shard's CSV
    out = tmp_path / "resumed"
    partial = _run(data, out, seed=3, max_items=2)
    assert partial.done == 2 and len(read_rows(out)) == 4
    with (out / "rows" / "shard-0-of-1.csv").open("a") as f:
        f.write("views8,fbp,vol1.h5,2,0,0.1,12.")
    resumed = _run(data, out, seed=3)
    assert resumed.done == 12 - 2  # 2 volumes x 3 slices x 2 settings, minus the finished ones
    assert _metric_rows(out) == _metric_rows(tmp_path / "full")
    assert _overall(resumed.summary) == _overall(full.summary)
    # a third run has nothing left to do
    assert _run(data, out, seed=3).done == 0
    rows = list(csv.DictReader((out / "rows.csv").open()))
    assert len(rows) == 24 and list(rows[0]) == ROW_FIELDS
    with h5py.File(out / "reconstructions" / "views8" / "fbp" / "vol0.h5") as f:
        assert f["reconstruction"].shape == (3, 24, 24) and f["reconstruction"].dtype == np.float32
    assert not list(out.rglob(".*.tmp*"))
    # the submission files are those of the uninterrupted run, byte for byte
    submissions = {folder: {str(p.relative_to(folder)): p.read_bytes() for p in (folder / "reconstructions").rglob("*.h5")}
                   for folder in (out, tmp_path / "full")}
    assert submissions[out] == submissions[tmp_path / "full"] and len(submissions[out]) == 8


def test_two_shards_give_the_rows_of_one(tmp_path):
    data = _ct_folder(tmp_path / "data")
    single = _run(data, tmp_path / "one", seed=1)
    out = tmp_path / "two"
    first = _run(data, out, seed=1, shard=Shard(1, 2))
    assert first.done == 6
    second = _run(data, out, seed=1, shard=Shard(0, 2))
    assert second.done == 6
    assert sorted(p.name for p in (out / "rows").glob("*.csv")) == ["shard-0-of-2.csv", "shard-1-of-2.csv"]
    assert _metric_rows(out) == _metric_rows(tmp_path / "one")
    assert _overall(second.summary) == _overall(single.summary)


@pytest.mark.hostile
def test_a_corrupt_file_is_reported_and_skipped(tmp_path):
    data = _ct_folder(tmp_path / "data")
    (data / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n not really")
    with h5py.File(data / "wrong.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 4, 4), np.complex64))
    result = _run(data, tmp_path / "out")
    skipped = {s["file"]: s["error"] for s in result.summary["skipped"]}
    assert set(skipped) == {"broken.h5", "wrong.h5"}
    assert "not a readable HDF5 file" in skipped["broken.h5"] and "no 'image' dataset" in skipped["wrong.h5"]
    assert {e["volumes"].keys() == {"vol0.h5", "vol1.h5"} for e in result.summary["methods"]} == {True}
    assert "Skipped files" in (tmp_path / "out" / "summary.md").read_text()


class _Diverging(Denoiser):
    def forward(self, x, sigma):
        return x * float("nan")


def test_a_failing_method_leaves_an_error_row_and_the_rest_finishes(tmp_path):
    data = _ct_folder(tmp_path / "data", volumes=1, slices=2)
    methods = {"fbp": Method("fbp", baseline="fbp"), "bad": Method("bad", sampler="dds", steps=3)}
    result = run_batch(CTFolder(data), methods, {"views8": CT_SETTINGS["views8"]}, tmp_path / "out", prior=_Diverging())
    assert len(result.summary["failed"]) == 2 and "non-finite values at step 0" in result.summary["failed"][0]["error"]
    assert [e["method"] for e in result.summary["methods"]] == ["fbp"]


def test_a_prior_that_cannot_run_on_a_volume_stops_the_run_before_any_slice(tmp_path):
    data = _ct_folder(tmp_path / "data", volumes=1, slices=2)
    with pytest.raises(ValueError, match=r"vol0\.h5: prior .*runs only at its fixed size 16 x 16.*of size 24 x 24"):
        run_batch(CTFolder(data), _ct_methods(), CT_SETTINGS, tmp_path / "out", prior=_ct_prior(16))
    assert not list((tmp_path / "out" / "rows").glob("*.csv"))


def test_metrics_follow_fastmri_conventions():
    g = np.random.default_rng(1)
    volume = g.random((3, 16, 16))
    pred = volume + 0.05 * g.standard_normal(volume.shape)
    data_max = float(volume.max())
    rows = []
    for i in range(3):
        m = slice_metrics(volume[i], pred[i], data_max)
        rows.append({"setting": "s", "method": "m", "volume": "v", "slice": i, "nfe": 0, "seconds": 1.0,
                     "error": "", **m})
    entry = summarise(rows)["methods"][0]
    # fastmri/evaluate.py: NMSE and PSNR over the volume, SSIM per slice with the volume max, averaged
    nmse = np.linalg.norm(volume - pred) ** 2 / np.linalg.norm(volume) ** 2
    psnr = 10 * np.log10(data_max**2 / np.mean((volume - pred) ** 2))
    ssim_ref = np.mean([ssim(volume[i], pred[i], data_range=data_max) for i in range(3)])
    assert entry["nmse"] == pytest.approx(nmse) and entry["psnr"] == pytest.approx(psnr)
    assert entry["ssim"] == pytest.approx(ssim_ref) and entry["psnr_std"] == 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _benchmark_cli(out: Path, data: Path, *extra: str) -> list[str]:
    return ["scripts/benchmark.py", "benchmark=ct", f"data.root={data}", f"benchmark.out_dir={out}",
            "benchmark.run=[fbp]",
            f"hydra.run.dir={out}/hydra",
            f"hydra.sweep.dir={out}/hydra", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(tmp_path):
    data = _ct_folder(tmp_path / "data", volumes=2, slices=3, size=24)
    subprocess.run([sys.executable, *_benchmark_cli(tmp_path / "one", data)], cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    done = subprocess.run([*torchrun, *_benchmark_cli(tmp_path / "two", data)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two" / "rows").glob("*.csv")) == ["shard-0-of-2.csv", "shard-1-of-2.csv"]
    assert _metric_rows(tmp_path / "two") == _metric_rows(tmp_path / "one")
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert _overall(one) == _overall(two)


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_shards(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    data = _ct_folder(tmp_path / "data", volumes=2, slices=2, size=24)
    subprocess.run([sys.executable, *_benchmark_cli(tmp_path / "one", data)], cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=300)
    done = subprocess.run(
        [sys.executable, *_benchmark_cli(tmp_path / "jobs", data, "shard=0,1", "num_shards=2",
                                         "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"), "-m"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _metric_rows(tmp_path / "jobs") == _metric_rows(tmp_path / "one")
    summary = json.loads((tmp_path / "jobs" / "summary.json").read_text())
    assert summary["rows"] == 2 * 2 * 4 and _overall(summary) == _overall(json.loads((tmp_path / "one" / "summary.json").read_text()))
    shutil.rmtree(tmp_path / "jobs" / "hydra", ignore_errors=True)


def test_report_writes_the_table_and_figures(tmp_path):
    from invdiff.batch.report import write_report

    data = _ct_folder(tmp_path / "data")
    out = tmp_path / "out"
    _run(data, out, seed=0)
    text = write_report(out)
    assert "| views8 | fbp | 0 |" in text and "| limited | dds | 2 |" in text
    for name in ("psnr_vs_nfe.png", "seconds.png", "examples.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.md").read_text().startswith(text)
    with pytest.raises(FileNotFoundError, match="no rows/ folder"):
        write_report(tmp_path / "data")


def test_compare_ranks_methods_over_runs_and_settings(tmp_path):
    """The InverseBench-style table: a row per method, a column per (run, setting), rows sorted
    by mean PSNR rank, the rank computed from the summaries' PSNRs."""
    from invdiff.batch.report import compare_runs, load_summary

    data = _ct_folder(tmp_path / "data")
    out = tmp_path / "out"
    _run(data, out, seed=0)
    text = compare_runs([f"a={out}", f"b={out}"], tmp_path / "table")
    lines = text.splitlines()
    summary = load_summary(out)
    settings = list(dict.fromkeys(e["setting"] for e in summary["methods"]))
    assert lines[0].count("PSNR / SSIM") == 2 * len(settings)
    by_method = {line.split(" | ")[0][2:]: line for line in lines[2:]}
    assert set(by_method) == {e["method"] for e in summary["methods"]}
    means = [float(line.rstrip(" |").split(" | ")[-1]) for line in lines[2:]]
    assert means == sorted(means)
    for setting in settings:
        entries = {e["method"]: e["psnr"] for e in summary["methods"] if e["setting"] == setting}
        best = max(entries, key=entries.get)
        assert f"{entries[best]:.2f} /" in by_method[best]
    assert (tmp_path / "table" / "quality_vs_nfe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="no rows/ folder"):
        compare_runs([tmp_path / "data"], tmp_path / "table")
    # one benchmark split over two folders under one label: the same columns, once each
    merged = compare_runs([f"ct={out}"], tmp_path / "merged").splitlines()
    assert merged[0].count("PSNR / SSIM") == len(settings) and "ct: " in merged[0]
    with pytest.raises(ValueError, match="more than one folder labelled 'ct'"):
        compare_runs([f"ct={out}", f"ct={out}"], tmp_path / "merged")


def test_a_slice_range_runs_those_slices_of_every_volume(tmp_path):
    data = _ct_folder(tmp_path / "data", volumes=2, slices=4)
    out = tmp_path / "out"
    result = _run(data, out, {"views8": CT_SETTINGS["views8"]}, slices=(1, -1))
    assert {(r["volume"], r["slice"]) for r in read_rows(out)} == {(f"vol{v}.h5", i) for v in (0, 1) for i in (1, 2)}
    assert result.summary["volumes"] == {"vol0.h5": [1, 2], "vol1.h5": [1, 2]}
    with h5py.File(out / "reconstructions" / "views8" / "fbp" / "vol1.h5") as f:
        assert f["reconstruction"].shape == (2, 24, 24) and list(f.attrs["slices"]) == [1, 2]
    with pytest.raises(ValueError, match=r"data.slices: expected \[start, stop\]"):
        _run(data, tmp_path / "bad", slices=(1,))


@pytest.mark.parametrize("benchmark", ["mri", "ct"])
def test_every_configured_method_builds(benchmark):
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "benchmark" / f"{benchmark}.yaml"))
    built = build_methods(cfg["methods"], cfg["run"])
    assert list(built) == cfg["run"] and all(isinstance(m, Method) for m in built.values())


@pytest.mark.parametrize(("entry", "message"), [
    ({"sampler": "dds", "params": {"cg_step": 3}}, r"methods\.m\.params: \['cg_step'\].*cg_steps"),
    ({"baseline": "tv", "params": {"lamda": 0.3}}, r"methods\.m\.params: \['lamda'\].*'lam'"),
    ({"sampler": "dds", "schedule": "cosine"}, r"methods\.m\.schedule: 'cosine'.*karras"),
    ({"sampler": "nope"}, r"methods\.m\.sampler: 'nope'"),
    ({"baseline": "nope"}, r"methods\.m\.baseline: 'nope'"),
    ({"sampler": "dds", "step": 3}, r"methods\.m: unknown keys \['step'\]"),
    ({"sampler": "dds", "params": {"shape": [1]}}, r"methods\.m\.params: \['shape'\]"),
])
@pytest.mark.hostile
def test_a_misconfigured_method_names_its_key_before_any_slice_runs(entry, message):
    with pytest.raises(ValueError, match=message):
        build_methods({"m": entry})


def test_schedule_params_narrow_the_noise_range_and_a_misspelt_one_names_its_key():
    from invdiff.priors.packaged import load_packaged

    entry = {"sampler": "reddiff", "steps": 10, "schedule": "loglinear", "schedule_params": {"sigma_max": 0.2}}
    sigmas = build_methods({"m": entry})["m"].sigmas(load_packaged("mri_brain_64"))
    assert sigmas[0].item() == pytest.approx(0.2) and sigmas[-1].item() == 0 and len(sigmas) == 11
    entry["schedule_params"] = {"sigma_maximum": 0.2}
    with pytest.raises(ValueError, match=r"methods\.m\.schedule_params: .*sigma_maximum"):
        build_methods({"m": entry})


def test_slice_batches_resume_to_the_uninterrupted_rows(tmp_path):
    data = _ct_folder(tmp_path / "data", volumes=1, slices=5)
    settings = {"views8": CT_SETTINGS["views8"]}
    full = _run(data, tmp_path / "full", settings, slice_batch=2)
    assert full.done == 3  # slices (0, 1), (2, 3), (4,)
    out = tmp_path / "resumed"
    _run(data, out, settings, slice_batch=2, max_items=1)
    lines = (out / "rows" / "shard-0-of-1.csv").read_text().splitlines()
    (out / "rows" / "shard-0-of-1.csv").write_text("\n".join(lines[:-1]) + "\n")  # lost the batch's last row
    assert _run(data, out, settings, slice_batch=2).done == 3
    assert _metric_rows(out) == _metric_rows(tmp_path / "full")
    with pytest.raises(ValueError, match="slice_batch: expected a positive integer"):
        _run(data, tmp_path / "bad", settings, slice_batch=0)


def test_two_runs_side_by_side(tmp_path):
    from invdiff.batch.report import side_by_side

    data = _ct_folder(tmp_path / "data", volumes=1, slices=2)
    _run(data, tmp_path / "a", {"views8": CT_SETTINGS["views8"]}, seed=0)
    _run(data, tmp_path / "b", {"views8": CT_SETTINGS["views8"]}, seed=1)
    text = side_by_side(tmp_path / "a", tmp_path / "b", ("seed 0", "seed 1"))
    lines = text.splitlines()
    assert lines[0].startswith("| setting | method | NFE | PSNR seed 0 | PSNR seed 1 | difference |")
    rows = {line.split(" | ")[1]: line.split(" | ") for line in lines[2:]}
    assert set(rows) == {"fbp", "dds"} and rows["dds"][2] == "2"
    psnr_a, psnr_b, difference = (float(v) for v in rows["fbp"][3:6])
    assert difference == pytest.approx(psnr_a - psnr_b, abs=0.011) and psnr_a != psnr_b  # other noise draws


def test_compare_marks_cells_over_fewer_slices_and_ranks_ties(tmp_path, monkeypatch):
    from invdiff.batch import report

    def entry(method, psnr, slices):
        return {"setting": "s", "method": method, "psnr": psnr, "ssim": 0.5, "nfe": 10,
                "seconds_per_slice": 1.0, "slices": slices}

    summaries = {"a": {"methods": [entry("m1", 30.0, 4), entry("m2", 30.0, 4), entry("m3", 20.0, 2)]}}
    monkeypatch.setattr(report, "load_summary", lambda run_dir: summaries[run_dir.name])
    monkeypatch.setattr(report, "plot_quality_vs_nfe", lambda columns: b"png")
    lines = report.compare_runs(["a"], tmp_path).splitlines()
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:5]}
    assert rows["m1"].endswith("| 1.5 |") and rows["m2"].endswith("| 1.5 |")  # a tie shares ranks 1 and 2
    assert "20.00 / 0.500 (2/4)" in rows["m3"] and rows["m3"].endswith("| 3.0 |")
    assert lines[-1].startswith("(n/m): over n of the m slices")
