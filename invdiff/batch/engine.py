r"""Batch reconstruction over a folder of volumes: resumable, sharded, with fastMRI-convention metrics.

A batch runs every *method* (:class:`invdiff.run.Method`: a posterior sampler with the batch's
prior, or a classical baseline) on every slice of every volume of a folder, under each *setting*
(an acceleration, a number of views), through :func:`invdiff.run.run_method`, and scores each
reconstruction against the volume's reference in fastMRI's conventions (``fastmri/evaluate.py``):

* NMSE :math:`\|gt - pred\|^2 / \|gt\|^2` over the volume;
* PSNR with the data range the maximum of the reference *volume*;
* SSIM per slice (7 x 7 window) with the same data range, averaged over the slices;

all on the reconstruction-size centre crop. Degenerate slices are scored as fastMRI scores them,
never left out: an exact reconstruction has an infinite PSNR and a reference of zeros an
undefined (NaN) NMSE; a mean over volumes that holds one is infinite or NaN, and the summary
counts and explains such volumes (:func:`summarise`). A volume without a reference (a fastMRI test or
challenge file) is reconstructed and written the same way; its rows carry no metrics, and the
summary lists it as not scored. Per slice, a row is appended to the shard's CSV as
soon as the slice is done (``rows/shard-<i>-of-<n>.csv``); the summary (``summary.json``,
``summary.md``, the merged ``rows.csv``) holds each volume's metrics, computed from the rows,
and their mean and standard deviation over the volumes. Reconstructions go to fastMRI's
submission layout: ``reconstructions/<setting>/<method>/<volume>.h5``, one float32 dataset
``reconstruction`` ``(slices, h, w)`` per volume, assembled once all its slices are done.

**Active settings.** A setting whose problems leave the choice of measurements to the method
(:func:`invdiff.problems.base.is_active`: ``mask_kind: active`` for MRI, ``candidate_views`` for
CT) runs only the active methods (:attr:`invdiff.run.Method.acquires`); the others have no row
there. An active method writes each slice's acquisition (the order of the units read, the step
of each, the unit grid) to ``acquisitions/<setting>/<method>/<volume>/<slice>.json``, and on a
fixed setting the mask it ran on.

**Resume.** A slice's reconstruction is written (atomically) before its row, and a row is one
``write`` of a whole line followed by ``fsync``. A restarted run on the same folder reads every
shard's rows, drops a torn last line, and skips the ``(setting, method, volume, slice)`` keys it
finds, so it redoes at most the slices in flight when it was killed. Every random choice is
seeded from the run's seed and the slice's (or slice batch's first slice's) key, never from the
order of work, so a resumed run,
a sharded one and a single one give the same rows (bar the timings). A damaged shard CSV (its
header, a line with the wrong fields or a non-number) is an error naming the file and line; no
row is ever dropped but a torn last one. Every file of the summary is written atomically, and a
merge rebuilds them all from the rows, so a merge killed at any write leaves the previous files
and the next run's merge completes them; the submission files are rebuilt when the slices they
were made from change (:func:`assemble_submission`) and are byte for byte the same for the same
slices.

**The run record.** Rows are only resumed from a run with the same parameters. ``run.json``,
written atomically when a folder's first run starts, records everything that determines the
rows (:func:`check_record`):

* for the run: the dataset's options (:meth:`Dataset.describe`: ``data.root`` resolved, the
  pattern, the MRI noise, scale and coil-map options), the seed, ``slice_batch``,
  ``data.slices`` and the package version;
* per setting: its options; per data file: its resolved path, size and modification time;
* per method: its entry with every default filled in, and for a sampler the prior's identity
  (class and a SHA-256 of its weights and configuration, :func:`prior_identity`) and the
  network's precision (baselines depend on neither).

A later run must agree with the record on the run's part and on every setting, file and method
both name, or it is refused with each difference named (``methods.cg.params.max_iter changed: 30
-> 1``); settings, files and methods new to the folder are added to it, so adding a method to a
run resumes the others. The device is not recorded (a GPU and a CPU differ in rounding only). A
folder with rows but no record is refused. ``resume=False`` starts afresh, in ``out_dir`` when
it holds no run and in ``<out_dir>-2`` (``-3``, ...) otherwise; a sharded run cannot agree on
such a folder and is refused. A shard holds a non-blocking lock (``rows/.shard-<i>-of-<n>.lock``)
while it runs, so a second process on the same shard fails at once.

**Slice batches.** ``slice_batch`` consecutive slices of a volume (under one setting) are one
:class:`~invdiff.problems.base.Problem` with the slices in the batch dimension, so a sampler
passes them through the network together; each slice's row gets the batch's time divided by its
size. The batches are fixed by the slice indices, so a resumed run redoes a whole batch (and
keeps only the rows it lacks), and its output is that of an uninterrupted run with the same
``slice_batch``; a different ``slice_batch`` draws different noise.

**Shards.** The work is a list of ``(volume, slice batch, setting)`` problems in a fixed order; shard
``i`` of ``n`` takes every ``n``-th one from ``i``. Under ``torchrun`` (``WORLD_SIZE > 1``) the
shard is the rank: each rank runs its share, all meet at a barrier and rank 0 merges. Under a
cluster launcher (Hydra's submitit launcher, one job per ``shard=i num_shards=n``) each job
merges when it finishes, under a file lock, so the last one to finish writes the complete
summary. ``merge`` rebuilds the summary from whatever rows are there.

**Bad input.** A volume that cannot be read (a damaged file, a link loop or dangling link, a
folder named like a volume, a ``max`` attribute that disagrees with the reference), or that the
slice range misses, is reported (``summary.json["skipped"]`` and the log) and skipped; a folder
with no readable volume or a slice range that selects nothing is an error; a method that fails
on a slice (a ``ValueError``, a divergence) leaves a row with its error, which the summary counts
as failed and leaves out of the means (:func:`invdiff.benchmarks.volumes.failed_everywhere`
turns a method that failed on every slice of a setting into an error of the command).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import inspect
import io
import json
import logging
import math
import os
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np
import torch

from invdiff import __version__
from invdiff.fileio import atomic_save_npy, atomic_write, atomic_write_text, json_safe
from invdiff.metrics import ssim
from invdiff.priors.base import Denoiser
from invdiff.problems.base import Problem, is_active
from invdiff.run import PASSED_ARGUMENTS, Method, run_method
from invdiff.samplers import BASELINES, SAMPLERS
from invdiff.schedules import SCHEDULES

log = logging.getLogger(__name__)

ROW_FIELDS = [
    "setting", "method", "volume", "slice", "nfe", "seconds", "psnr", "ssim", "nmse",
    "sq_error", "sq_reference", "pixels", "data_max", "error",
]
"""Columns of the per-slice CSV. ``sq_error``, ``sq_reference`` and ``pixels`` make the volume's
NMSE and PSNR exact sums over its slices; ``data_max`` is the reference volume's maximum."""

KEY = ("setting", "method", "volume", "slice")


# --------------------------------------------------------------------------------------------
# What a dataset and a method provide
# --------------------------------------------------------------------------------------------


class Volume(Protocol):
    """A readable volume: its name, slice count, reference maximum and problems over its slices."""

    name: str
    num_slices: int
    data_max: float | None
    """The reference volume's maximum (fastMRI's data range), ``None`` without a reference."""
    x_shape: tuple[int, int, int, int]
    """The unknown of one slice, ``(1, C, H, W)``."""

    def problem(self, indices: Sequence[int], setting: dict, *, generators: Sequence[torch.Generator]) -> Problem:
        """The slices ``indices`` under ``setting`` as one problem (slices in the batch dimension),
        each slice's simulated noise drawn from its own generator; the target, when there is one,
        is ``(len(indices), 1, h, w)``."""


class Dataset(Protocol):
    """A folder of volumes."""

    def paths(self) -> list[Path]:
        """The volume files, sorted."""

    def open(self, path: Path) -> Volume:
        """Read a volume's header; raise ``ValueError`` or ``OSError`` naming the file when it is bad."""

    def describe(self) -> dict:
        """Everything besides the files that determines the problems (the folder, the pattern, the
        estimation rules), keyed by config name (e.g. ``"data.root"``, ``"noise_std"``), JSON-able."""


# --------------------------------------------------------------------------------------------
# Rows: append, read, merge
# --------------------------------------------------------------------------------------------


def _row_key(row: dict) -> tuple:
    return (str(row["setting"]), str(row["method"]), str(row["volume"]), int(row["slice"]))


HEADER = ",".join(ROW_FIELDS)
_INTEGERS = ("slice", "nfe", "pixels")
_FLOATS = ("seconds", "psnr", "ssim", "nmse", "sq_error", "sq_reference", "data_max")


def _complete_lines(text: str) -> str:
    """``text`` without a torn last line (a run killed while appending a row)."""
    return text if not text or text.endswith("\n") else text[: text.rfind("\n") + 1]


def _check_header(path: Path, record: list[str] | None) -> None:
    if record is not None and ",".join(record) != HEADER:
        raise ValueError(
            f"{path}: the header line is {','.join(record)!r}; expected {HEADER!r}. The rows below it are "
            f"kept: restore the header line (or move the file away to redo its slices)"
        )


def read_shard(path: Path) -> list[dict]:
    """The complete rows of one shard's CSV, typed, in file order (duplicates kept).

    A torn last line (a run killed mid-write) is dropped; blank lines are ignored.

    Raises:
        ValueError: the header is not :data:`ROW_FIELDS`, or a line has the wrong number of
            fields or a value that is not a number where one is expected; the message names the
            file and the line. Nothing is discarded: the file is left as it is.
    """
    reader = csv.reader(io.StringIO(_complete_lines(path.read_text())))
    _check_header(path, next(reader, None))
    rows = []
    for record in reader:
        if not record:
            continue
        where = f"{path}, line {reader.line_num}"
        if len(record) != len(ROW_FIELDS):
            raise ValueError(f"{where}: {len(record)} fields; expected {len(ROW_FIELDS)} ({HEADER}). "
                             f"Fix or delete the line (a deleted row's slice is redone on resume)")
        rows.append(_typed(dict(zip(ROW_FIELDS, record)), where))
    return rows


def read_rows(out_dir: Path) -> list[dict]:
    """Every complete row of every shard's CSV under ``out_dir/rows``, one per key, sorted by key.

    A torn last line (a run killed mid-write) and duplicate keys (a slice redone after a kill
    between its row and the next) are dropped; the first complete row of a key wins.

    Raises:
        ValueError: a shard's header or one of its lines is damaged (:func:`read_shard`).
    """
    rows: dict[tuple, dict] = {}
    for path in sorted((out_dir / "rows").glob("shard-*.csv")):
        for row in read_shard(path):
            rows.setdefault(_row_key(row), row)
    return [rows[k] for k in sorted(rows)]


def _typed(row: dict, where: str) -> dict:
    """``row`` (strings from the CSV) with numbers parsed; ``where`` names the file and line in errors."""
    out = dict(row)
    for k in ("setting", "method", "volume", "slice"):
        if not row[k]:
            raise ValueError(f"{where}: column {k!r} is empty. Fix or delete the line (a deleted row's slice "
                             f"is redone on resume)")
    for k in _INTEGERS + _FLOATS:
        value = row[k]
        if value == "" and k != "slice":
            out[k] = 0 if k in _INTEGERS else math.nan
            continue
        try:
            number = float(value)
        except ValueError:
            number = None
        if k in _INTEGERS:
            if number is None or not number.is_integer():
                raise ValueError(f"{where}: column {k!r} holds {value!r}; expected a whole number")
            out[k] = int(number)
        elif number is None:
            raise ValueError(f"{where}: column {k!r} holds {value!r}; expected a number (or inf, nan)")
        else:
            out[k] = number
    out["error"] = row.get("error") or ""
    return out


class RowWriter:
    """Appends rows to one shard's CSV: a whole line per ``write``, flushed and synced.

    Raises:
        ValueError: the existing file's header is damaged (the file is left as it is).
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            text = path.read_text()
            _check_header(path, next(csv.reader(io.StringIO(_complete_lines(text))), None))
            if _complete_lines(text) != text:  # drop a torn last line before appending
                atomic_write_text(path, _complete_lines(text))
        if not path.is_file() or path.stat().st_size == 0:
            atomic_write_text(path, HEADER + "\n")

    def append(self, row: dict) -> None:
        """Append ``row`` (its :data:`ROW_FIELDS`; an error message on one line)."""
        values = {k: row.get(k, "") for k in ROW_FIELDS}
        values["error"] = " ".join(str(values["error"]).split())
        buffer = io.StringIO()
        csv.DictWriter(buffer, ROW_FIELDS, lineterminator="\n").writerow(values)
        with self.path.open("a") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------
# Metrics and summary
# --------------------------------------------------------------------------------------------


def slice_metrics(target: np.ndarray, pred: np.ndarray, data_max: float) -> dict:
    """fastMRI's per-slice quantities: PSNR and SSIM with the volume's maximum, NMSE, and the
    sums a volume's NMSE and PSNR are made of."""
    target, pred = np.asarray(target, np.float64), np.asarray(pred, np.float64)
    if target.shape != pred.shape:
        raise ValueError(f"reconstruction: shape {pred.shape} differs from the reference's {target.shape}")
    sq_error = float(np.sum((target - pred) ** 2))
    sq_reference = float(np.sum(target**2))
    pixels = target.size
    mse = sq_error / pixels
    return {
        "psnr": float("inf") if mse == 0 else 10 * math.log10(data_max**2 / mse),
        "ssim": ssim(target, pred, data_range=data_max),
        "nmse": sq_error / sq_reference if sq_reference > 0 else math.nan,
        "sq_error": sq_error,
        "sq_reference": sq_reference,
        "pixels": pixels,
        "data_max": data_max,
    }


def volume_metrics(rows: Sequence[dict]) -> dict:
    """One volume's metrics from its slice rows (fastMRI's ``evaluate.py`` on the whole volume)."""
    sq_error = sum(r["sq_error"] for r in rows)
    sq_reference = sum(r["sq_reference"] for r in rows)
    pixels = sum(r["pixels"] for r in rows)
    data_max = rows[0]["data_max"]
    mse = sq_error / pixels
    return {
        "nmse": sq_error / sq_reference if sq_reference > 0 else math.nan,
        "psnr": float("inf") if mse == 0 else 10 * math.log10(data_max**2 / mse),
        "ssim": _mean(r["ssim"] for r in rows),
        "slices": len(rows),
        "seconds_per_slice": _mean(r["seconds"] for r in rows),
        "nfe": max(r["nfe"] for r in rows),
    }


def _mean(values: Iterable[float]) -> float:
    """The mean as ``numpy.mean`` gives it: infinite when a value is, NaN when one is NaN."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(np.mean(values))


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    """The mean (:func:`_mean`) and the sample standard deviation, NaN when a value is not finite."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    if not np.all(np.isfinite(values)):
        return _mean(values), math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def _scored(row: dict) -> bool:
    return not math.isnan(row["sq_reference"])


def summarise(rows: Sequence[dict], expected_slices: dict[str, int] | None = None) -> dict:
    """Per ``(setting, method)``: each volume's metrics and their mean and std over the volumes.

    Rows of volumes without a reference (no metrics, no error) count as reconstructed but not
    scored: they enter ``unscored`` and ``unscored_volumes``, never the means.

    Args:
        rows: the slice rows (:func:`read_rows`).
        expected_slices: ``{volume: slices}``; a volume with fewer good rows is marked incomplete.

    Returns:
        ``{"methods": [...], "failed": [...], "unscored_volumes": [...]}``: per ``(setting, method)``
        the ``volumes`` (``{name: metrics}``), the overall ``psnr``, ``ssim``, ``nmse`` means and
        stds, ``nfe``, ``seconds_per_slice``, ``slices`` (scored), ``unscored`` and ``failed``
        counts, ``nonfinite`` (per metric, the volumes whose value is infinite or NaN, when any);
        every failed row's key and error; the volumes reconstructed without a reference.

    Degenerate volumes are kept, as fastMRI's ``evaluate.py`` keeps them: a volume reconstructed
    exactly has an infinite PSNR, one whose reference is all zeros an undefined (NaN) NMSE, and
    the mean over volumes is then infinite or NaN too (``numpy.mean``), its std NaN;
    ``nonfinite`` counts them and :func:`markdown_summary` says so under the table.
    """
    groups: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    failed, unscored_volumes = [], set()
    for row in rows:
        if row["error"]:
            failed.append({k: row[k] for k in (*KEY, "error")})
            continue
        groups[(row["setting"], row["method"])][row["volume"]].append(row)
        if not _scored(row):
            unscored_volumes.add(row["volume"])
    methods = []
    for (setting, method), volumes in groups.items():
        scored = {name: [r for r in vrows if _scored(r)] for name, vrows in sorted(volumes.items())}
        per_volume = {name: volume_metrics(vrows) for name, vrows in scored.items() if vrows}
        if expected_slices:
            for name, metrics in per_volume.items():
                metrics["complete"] = metrics["slices"] == expected_slices.get(name, metrics["slices"])
        entry = {"setting": setting, "method": method, "volumes": per_volume}
        for metric in ("psnr", "ssim", "nmse"):
            entry[metric], entry[f"{metric}_std"] = _mean_std(m[metric] for m in per_volume.values())
        entry["nonfinite"] = {metric: n for metric in ("psnr", "ssim", "nmse")
                              if (n := sum(not math.isfinite(m[metric]) for m in per_volume.values()))}
        all_rows = [r for vrows in volumes.values() for r in vrows]
        entry["nfe"] = max(r["nfe"] for r in all_rows)
        entry["seconds_per_slice"] = _mean(r["seconds"] for r in all_rows)
        entry["slices"] = sum(len(vrows) for vrows in scored.values())
        entry["unscored"] = len(all_rows) - entry["slices"]
        entry["failed"] = sum(1 for f in failed if f["setting"] == setting and f["method"] == method)
        methods.append(entry)
    return {"methods": methods, "failed": failed, "unscored_volumes": sorted(unscored_volumes)}


def _order(summary_methods: list[dict], settings: Sequence[str], methods: Sequence[str]) -> list[dict]:
    def rank(entry):
        s = settings.index(entry["setting"]) if entry["setting"] in settings else len(settings)
        m = methods.index(entry["method"]) if entry["method"] in methods else len(methods)
        return s, m, entry["setting"], entry["method"]

    return sorted(summary_methods, key=rank)


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    if math.isinf(mean):
        return "inf" if mean > 0 else "-inf"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "nmse": "NMSE"}


def _nonfinite_notes(entry: dict) -> list[str]:
    """Lines on the volumes whose metrics are infinite or undefined (:func:`summarise`)."""
    notes = []
    for metric in entry.get("nonfinite", {}):
        values = [m[metric] for m in entry["volumes"].values()]
        finite = [v for v in values if math.isfinite(v)]
        where = f"{entry['setting']} {entry['method']}"
        infinite = sum(math.isinf(v) for v in values)
        undefined = sum(math.isnan(v) for v in values)
        if infinite:
            notes.append(f"{where}: {_LABELS[metric]} is infinite for {infinite} of {len(values)} volumes "
                         f"(reconstructed exactly), and so is the mean, as fastMRI's evaluate.py gives it")
        if undefined:
            notes.append(f"{where}: {_LABELS[metric]} is undefined for {undefined} of {len(values)} volumes "
                         f"(0 / 0: a reference of zeros), and so is the mean")
        if finite:
            mean, std = _mean_std(finite)
            plural = "s" if len(finite) != 1 else ""
            notes[-1] += (f"; over the other {len(finite)} volume{plural} "
                          f"{_pm(mean, std, 2 if metric == 'psnr' else 4)}")
    return notes


def markdown_summary(summary: dict) -> str:
    """The summary as a markdown table: per setting and method, NFE, PSNR, SSIM and NMSE (mean ±
    std over volumes), seconds per slice, volumes and slices; then the skipped files and failures."""
    lines = [
        "| setting | method | NFE | PSNR (dB) | SSIM | NMSE | s / slice | volumes | slices |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary["methods"]:
        failed = f" ({e['failed']} failed)" if e["failed"] else ""
        failed += f" (+{e['unscored']} not scored)" if e.get("unscored") else ""
        lines.append(
            f"| {e['setting']} | {e['method']} | {e['nfe']} | {_pm(e['psnr'], e['psnr_std'], 2)} | "
            f"{_pm(e['ssim'], e['ssim_std'], 3)} | {_pm(e['nmse'], e['nmse_std'], 4)} | "
            f"{e['seconds_per_slice']:.2f} | {len(e['volumes'])} | {e['slices']}{failed} |"
        )
    text = "\n".join(lines) + "\n\nMeans ± standard deviations over volumes (fastMRI's per-volume metrics)."
    degenerate = [note for e in summary["methods"] for note in _nonfinite_notes(e)]
    if degenerate:
        text += "\n\n" + "\n".join(f"- {note}." for note in degenerate)
    if summary.get("notes"):
        text += "\n\n" + "\n".join(f"- {note}" for note in summary["notes"])
    if summary.get("unscored_volumes"):
        names = ", ".join(f"`{v}`" for v in summary["unscored_volumes"])
        text += (f"\n\n{len(summary['unscored_volumes'])} volumes have no reference (test or challenge files): "
                 f"reconstructed and written to `reconstructions/`, not scored ({names}).")
    if summary.get("skipped"):
        text += "\n\nSkipped files:\n" + "\n".join(f"- `{s['file']}`: {s['error']}" for s in summary["skipped"])
    if summary.get("failed"):
        text += f"\n\n{len(summary['failed'])} slice reconstructions failed (summary.json, `failed`)."
    return text


# --------------------------------------------------------------------------------------------
# Layout of a run folder
# --------------------------------------------------------------------------------------------


def slice_path(out_dir: Path, setting: str, method: str, volume: str, index: int) -> Path:
    return out_dir / "slices" / setting / method / Path(volume).stem / f"{index:04d}.npy"


def target_path(out_dir: Path, volume: str, index: int) -> Path:
    return out_dir / "slices" / "reference" / Path(volume).stem / f"{index:04d}.npy"


def acquisition_path(out_dir: Path, setting: str, method: str, volume: str, index: int) -> Path:
    """Where an active method's acquisition of a slice is written (:func:`_save_acquisition`)."""
    return out_dir / "acquisitions" / setting / method / Path(volume).stem / f"{index:04d}.json"


def _save_acquisition(path: Path, info: dict, b: int) -> None:
    """The ``b``-th slice's acquisition as JSON: ``order`` (unit indices, the start first),
    ``acquired_at`` (the step of each, -1 for the start), ``unit`` and ``grid`` (the units'
    layout, so that ``order`` draws the mask). An active method on a fixed measurement (nothing
    acquired) writes the measurement's units, all held from the start."""
    order, steps = info["order"][b].tolist(), info["acquired_at"][b].tolist()
    if not order:
        order = torch.nonzero(info["mask"][b].flatten()).flatten().tolist()
        steps = [-1] * len(order)
    record = {"order": order, "acquired_at": steps, "unit": info["unit"], "grid": list(info["mask"].shape[1:])}
    atomic_write_text(path, json.dumps(record) + "\n", mkdir=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_save_npy(path, np.asarray(array, dtype=np.float32), mkdir=True)


SOURCES = ".sources.json"
"""``reconstructions/.sources.json``: per submission file, the slice files it was built from (their
sizes and modification times) and its own, so that a merge rewrites exactly the stale files."""


def write_submission(path: Path, recon: np.ndarray, indices: Sequence[int]) -> None:
    """Write one volume's ``(slices, h, w)`` float32 ``reconstruction`` atomically, byte for byte the
    same for the same data (no object timestamps); a partial range of slices goes to the
    ``slices`` attribute."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=np.asarray(recon, dtype=np.float32), track_times=False)
            if list(indices) != list(range(len(indices))) or len(indices) != recon.shape[0]:
                f.attrs["slices"] = np.asarray(indices)

    atomic_write(path, write, mkdir=True)


def _stamp(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, ``None`` when it is absent."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def assemble_submission(out_dir: Path, rows: Sequence[dict], expected_slices: dict[str, list[int]]) -> list[Path]:
    """Write ``reconstructions/<setting>/<method>/<volume>.h5`` for every volume whose slices are all done.

    ``expected_slices`` holds each volume's slice indices in the run (all of them unless the run
    took a range); a file of a partial range carries them in its ``slices`` attribute. A file is
    (re)written unless :data:`SOURCES` shows it was built from the current slice files and has not
    changed since, so a file from slices redone since, or replaced, is rebuilt; temporary files
    that a killed merge left are removed first. Callers hold the run folder's lock.

    Returns:
        The files written.
    """
    root = out_dir / "reconstructions"
    for leftover in root.rglob(".*.tmp*") if root.is_dir() else []:
        leftover.unlink()
    sources_path = root / SOURCES
    sources = {}
    if sources_path.is_file():
        try:
            sources = json.loads(sources_path.read_text())
        except json.JSONDecodeError as err:
            log.warning("%s: unreadable (%s); rebuilding every submission file", sources_path, err)
        if not isinstance(sources, dict):
            log.warning("%s: not a record of submission files; rebuilding every one", sources_path)
            sources = {}
    done: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for row in rows:
        if not row["error"]:
            done[(row["setting"], row["method"], row["volume"])].add(row["slice"])
    written = []
    for (setting, method, volume), slices in sorted(done.items()):
        indices = expected_slices.get(volume)
        if indices is None or slices != set(indices):
            continue
        path = root / setting / method / volume
        key = str(path.relative_to(root))
        parts = [slice_path(out_dir, setting, method, volume, i) for i in indices]
        record = {"slices": list(indices), "sources": [_stamp(q) for q in parts]}
        if sources.get(key, {}).get("file") is not None and sources[key] == {**record, "file": _stamp(path)}:
            continue
        write_submission(path, np.stack([np.load(q) for q in parts]), indices)
        sources[key] = {**record, "file": _stamp(path)}
        written.append(path)
    if written:
        atomic_write_text(sources_path, json.dumps(sources, indent=1, sort_keys=True) + "\n")
    return written


def _json_summary(value):
    """``value`` for strict JSON: infinities as the strings ``"inf"`` and ``"-inf"`` (an exact
    reconstruction's PSNR), NaN as ``null`` (:func:`invdiff.fileio.json_safe`)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _json_summary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_summary(v) for v in value]
    return json_safe(value)


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """An exclusive lock on the run folder (``.lock``), so that concurrent mergers take turns."""
    with (out_dir / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def merge(out_dir: Path, *, settings: Sequence[str] = (), methods: Sequence[str] = ()) -> dict:
    """Merge every shard's rows into ``rows.csv``, ``summary.json`` and ``summary.md`` and write the
    submission files of the complete volumes; the summary is returned.

    The volumes' slice counts and the skipped files come from the shards' ``manifest-*.json``.
    """
    out_dir = Path(out_dir)
    with _locked(out_dir):
        expected: dict[str, list[int]] = {}
        skipped: dict[str, str] = {}
        notes: list[str] = []
        for path in sorted(out_dir.glob("rows/manifest-*.json")):
            try:
                manifest = json.loads(path.read_text())
                expected.update(manifest["volumes"])
                skipped.update(manifest["skipped"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: not a shard manifest ({type(err).__name__}: {err}); delete it and rerun "
                                 f"that shard, which rewrites it") from err
            notes.extend(n for n in manifest.get("notes", []) if n not in notes)
        rows = read_rows(out_dir)
        summary = summarise(rows, {name: len(indices) for name, indices in expected.items()})
        summary["methods"] = _order(summary["methods"], list(settings), list(methods))
        summary["skipped"] = [{"file": k, "error": v} for k, v in sorted(skipped.items())]
        summary["volumes"] = expected
        summary["notes"] = notes
        summary["rows"] = len(rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in ROW_FIELDS} for r in rows)
        atomic_write_text(out_dir / "rows.csv", buffer.getvalue())
        atomic_write_text(out_dir / "summary.json", json.dumps(_json_summary(summary), indent=1) + "\n")
        atomic_write_text(out_dir / "summary.md", markdown_summary(summary) + "\n")
        assemble_submission(out_dir, rows, expected)
    return summary


# --------------------------------------------------------------------------------------------
# The run record (run.json): what determines the rows, checked on resume
# --------------------------------------------------------------------------------------------

RECORD = "run.json"
_PER_NAME = ("settings", "files", "methods")
"""Parts of the record compared name by name: a name new to the folder is added, one absent from
this run is kept; every other part must be equal."""


def _plain(value):
    """``value`` as JSON-able data: containers recursively, functions by qualified name, other
    objects by ``repr`` without memory addresses."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _normal(value):
    """``value`` as it reads back from ``run.json`` (tuples as lists, NaN as null), for comparisons."""
    return json.loads(json.dumps(json_safe(_plain(value))))


def _defaults(fn, skip: int, leave: Sequence[str] = ()) -> dict:
    """The keyword defaults of ``fn`` after its first ``skip`` parameters, less ``leave``."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty and p.name not in leave}


def prior_identity(prior: Denoiser) -> dict:
    """The prior's class and a SHA-256 of its weights and configuration.

    The digest covers every tensor of the state dict (name, dtype, shape, bytes) and the plain
    attributes (numbers, strings, tuples and dicts of them) of each of its modules, such as an
    adapter's prediction type or noise range; it does not depend on where the weights came from.
    Hashing reads the weights once (about a second per GB).
    """
    digest = hashlib.sha256()
    config = {}
    for name, module in prior.named_modules():
        attrs = {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"
                 and _is_plain(v)}
        config[name] = [f"{type(module).__module__}.{type(module).__qualname__}", attrs]
    digest.update(json.dumps(_normal(config), sort_keys=True).encode())
    for name, tensor in prior.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"class": f"{type(prior).__module__}.{type(prior).__qualname__}", "sha256": digest.hexdigest()}


def _is_plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def method_record(method: Method, prior: Denoiser | None, precision: str, prior_id: dict | None = None) -> dict:
    """What determines a method's rows besides the data: its entry with every default filled in
    (so that ``params: {}`` and the defaults written out are the same method) and, for a sampler,
    the prior's identity (:func:`prior_identity`) and the network's precision."""
    if method.baseline is not None:
        return {"baseline": method.baseline,
                "params": {**_defaults(BASELINES[method.baseline], 2), **method.params}}
    schedule = {**_defaults(SCHEDULES[method.schedule], 1, ("sigma_min", "sigma_max")), **method.schedule_params}
    return {"sampler": method.sampler, "steps": method.steps, "schedule": method.schedule,
            "schedule_params": schedule,
            "params": {**_defaults(SAMPLERS[method.sampler], 4, PASSED_ARGUMENTS), **method.params},
            "prior": prior_id or (prior_identity(prior) if prior is not None else None), "precision": precision}


def file_identity(path: Path) -> dict:
    """A data file's resolved path, size and modification time (a rewritten file differs)."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _changes(old, new, where: str = "") -> list[str]:
    """Each difference between two records, named by its path (``methods.cg.params.max_iter``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            path = f"{where}.{key}" if where else key
            if key not in old:
                out.append(f"{path} added: {new[key]!r}")
            elif key not in new:
                out.append(f"{path} removed (was {old[key]!r})")
            else:
                out += _changes(old[key], new[key], path)
        return out
    return [] if old == new else [f"{where} changed: {old!r} -> {new!r}"]


def check_record(out_dir: Path, record: dict) -> None:
    """Compare this run's ``record`` with the folder's ``run.json`` and add what is new to it.

    The first run writes the record (atomically). A later one must agree on every part but
    :data:`_PER_NAME`, and on every setting, file and method the two share; new settings, files
    and methods are added, so that a method added to ``run`` resumes the others.

    Raises:
        ValueError: the records differ (each difference is named), or the folder holds rows but
            no ``run.json`` (a run whose parameters are unknown).
    """
    record = _normal(record)
    path = out_dir / RECORD
    with _locked(out_dir):
        if not path.is_file():
            if any(read_shard(p) for p in sorted((out_dir / "rows").glob("shard-*.csv"))):
                raise ValueError(f"benchmark.out_dir: {out_dir} holds rows but no {RECORD}, so the parameters "
                                 f"they were made with cannot be checked; use a new benchmark.out_dir, or "
                                 f"benchmark.resume=false to start afresh in a new numbered folder beside it")
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            return
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); restore it, or use a new benchmark.out_dir") from err
        changes = _changes({k: v for k, v in old.items() if k not in _PER_NAME},
                           {k: v for k, v in record.items() if k not in _PER_NAME})
        for part in _PER_NAME:
            shared = set(old.get(part, {})) & set(record[part])
            changes += _changes({k: old[part][k] for k in shared}, {k: record[part][k] for k in shared}, part)
        if changes:
            raise ValueError(f"benchmark.out_dir: {out_dir} holds a run that differs from this one "
                             f"({'; '.join(changes)}), whose rows would be mixed with this run's; use a new "
                             f"benchmark.out_dir, or benchmark.resume=false to start afresh in a new numbered "
                             f"folder beside it")
        merged = {**old, **{part: {**old.get(part, {}), **record[part]} for part in _PER_NAME}}
        if merged != old:
            atomic_write_text(path, json.dumps(merged, indent=1) + "\n")


def _holds_run(out_dir: Path) -> bool:
    return (out_dir / RECORD).is_file() or any(p.stat().st_size for p in out_dir.glob("rows/shard-*.csv"))


def _fresh_folder(out_dir: Path, shard: Shard) -> Path:
    """``out_dir`` when it holds no run, else the first free ``<out_dir>-2``, ``-3``, ... (``resume=false``)."""
    if shard.count > 1:
        raise ValueError(f"benchmark.resume=false: a run split into shards ({shard.count}) cannot agree on a new "
                         f"folder; give it a new benchmark.out_dir (its shards then resume together)")
    if not _holds_run(out_dir):
        return out_dir
    k = 2
    while out_dir.with_name(f"{out_dir.name}-{k}").exists():
        k += 1
    fresh = out_dir.with_name(f"{out_dir.name}-{k}")
    log.warning("benchmark.resume=false: %s holds a run; this one starts afresh in %s", out_dir, fresh)
    return fresh


@contextmanager
def _shard_lock(out_dir: Path, shard: Shard) -> Iterator[None]:
    """A non-blocking exclusive lock on the shard (``rows/.shard-<i>-of-<n>.lock``) for the time it runs."""
    path = out_dir / "rows" / f".shard-{shard.index}-of-{shard.count}.lock"
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RuntimeError(f"shard {shard.index} of {shard.count} of {out_dir} is being run by another process "
                               f"(it holds {path.name}); wait for it to finish, or run another shard or "
                               f"benchmark.out_dir") from err
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Shards and the run
# --------------------------------------------------------------------------------------------


@dataclass
class Shard:
    """Which share of the work this process does, and whether it is part of a torch.distributed group."""

    index: int = 0
    count: int = 1
    distributed: bool = False
    local_rank: int = 0


def resolve_shard(shard: int = 0, num_shards: int = 1) -> Shard:
    """The process's shard: the rank under ``torchrun`` (``WORLD_SIZE > 1``), else ``shard`` of ``num_shards``.

    Under ``torchrun`` the ``gloo`` process group is joined here (``nccl`` is not needed: the
    ranks only meet at barriers).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return Shard(dist.get_rank(), dist.get_world_size(), True, int(os.environ.get("LOCAL_RANK", "0")))
    if not (isinstance(num_shards, int) and num_shards >= 1):
        raise ValueError(f"num_shards: expected an integer >= 1, got {num_shards!r}")
    if not (isinstance(shard, int) and 0 <= shard < num_shards):
        raise ValueError(f"shard: expected an integer in [0, {num_shards}), got {shard!r}")
    return Shard(shard, num_shards)


def item_seed(seed: int, volume: str, index: int, setting: str) -> int:
    """A seed from the run's seed and the slice's key alone (stable across processes and orders)."""
    return zlib.crc32(f"{seed}/{volume}/{index}/{setting}".encode()) + 1_000_003 * seed


@dataclass
class BatchResult:
    summary: dict
    done: int = 0
    skipped_items: int = 0
    out_dir: Path = field(default_factory=Path)


def run_batch(
    dataset: Dataset,
    methods: dict[str, Method],
    settings: dict[str, dict],
    out_dir: Path,
    *,
    prior: Denoiser | None = None,
    seed: int = 0,
    shard: Shard | None = None,
    slices: Sequence[int] | None = None,
    slice_batch: int = 1,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    compile_mode: str | bool = "off",
    notes: Sequence[str] = (),
    max_items: int | None = None,
    resume: bool = True,
) -> BatchResult:
    """Run ``methods`` on this shard's slices of ``dataset`` under ``settings``, resuming from ``out_dir``.

    Args:
        dataset: the folder of volumes.
        methods: ``{name: method}``, in the order of the report.
        settings: ``{name: options}`` passed to :meth:`Volume.problem`.
        out_dir: the run folder; rows already there are kept and their slices skipped.
        prior: the prior of the sampler methods.
        seed: the run's seed (mixed with each slice's key).
        shard: this process's share (:func:`resolve_shard`); default all of it.
        slices: ``(start, stop)``, a Python range of slice indices taken in every volume
            (negative values count from the end, e.g. ``(3, -3)``); default every slice.
        slice_batch: consecutive slices of a volume run as one batch (module docstring).
        device: where the methods run.
        precision: the network's precision (:func:`invdiff.run.run_method`).
        compile_mode: ``torch.compile`` the network (:func:`invdiff.run.run_method`); like the
            device, it is not part of the run record, since it changes results by round-off only.
        notes: lines the summary carries (e.g. that the coil maps are an oracle's).
        max_items: stop after this many new ``(volume, slice batch, setting)`` problems (for
            tests that simulate a killed run).
        resume: resume the run in ``out_dir`` (its ``run.json`` must agree with this run's); false
            starts afresh, in ``out_dir`` if it holds no run, else in the first free
            ``<out_dir>-2``, ``-3``, ... (one process only: shards could not agree on it).

    Returns:
        The merged summary (rank 0 of a torchrun group, or every cluster job), counts, and the
        run folder used.

    Raises:
        ValueError: bad arguments, nothing to run (no readable volume, an empty slice range), or
            a folder holding another run (module docstring, "Resume").
        RuntimeError: another process is running this shard of the folder.
    """
    if int(slice_batch) != slice_batch or slice_batch < 1:
        raise ValueError(f"slice_batch: expected a positive integer, got {slice_batch!r}")
    shard = shard or Shard()
    out_dir = Path(out_dir) if resume else _fresh_folder(Path(out_dir), shard)
    (out_dir / "rows").mkdir(parents=True, exist_ok=True)
    with _shard_lock(out_dir, shard):
        new, skipped = _run_shard(dataset, methods, settings, out_dir, prior=prior, seed=seed, shard=shard,
                                  slices=slices, slice_batch=slice_batch, device=device, precision=precision,
                                  compile_mode=compile_mode, notes=notes, max_items=max_items)
    if shard.distributed:
        import torch.distributed as dist

        dist.barrier()
        summary = merge(out_dir, settings=list(settings), methods=list(methods)) if shard.index == 0 else {}
        dist.barrier()
    else:
        summary = merge(out_dir, settings=list(settings), methods=list(methods))
    return BatchResult(summary, new, len(skipped), out_dir)


def _run_shard(dataset: Dataset, methods: dict[str, Method], settings: dict[str, dict], out_dir: Path, *,
               prior: Denoiser | None, seed: int, shard: Shard, slices: Sequence[int] | None, slice_batch: int,
               device, precision: str, compile_mode: str | bool, notes: Sequence[str],
               max_items: int | None) -> tuple[int, dict[str, str]]:
    """:func:`run_batch`'s work on this shard, under its lock: the new problems run and the skipped files."""
    done = {_row_key(r) for r in read_rows(out_dir)}

    # 1. Every volume's header (all shards read all headers: cheap); bad files are reported.
    opened: list[tuple[Path, Volume]] = []
    skipped: dict[str, str] = {}
    for path in dataset.paths():
        try:
            opened.append((path, dataset.open(path)))
        except (ValueError, OSError) as err:
            log.warning("skipping %s: %s", path.name, err)
            skipped[path.name] = str(err)
    volumes = [v for _, v in opened]
    # 2. A prior that cannot run on a volume stops the run here, before any slice.
    if prior is not None and any(m.is_sampler for m in methods.values()):
        for volume in volumes:
            try:
                prior.input_size(volume.x_shape)
            except ValueError as err:
                raise ValueError(f"{volume.name}: {err}") from None
    # 3. Something to run: a readable volume, slices in the range.
    if not volumes:
        listed = "; ".join(f"{name}: {error}" for name, error in sorted(skipped.items()))
        raise ValueError(f"data.root: none of the {len(skipped)} files could be read ({listed})")
    chosen = {v.name: _slice_range(v.num_slices, slices) for v in volumes}
    if not any(chosen.values()):
        counts = ", ".join(f"{v.name}: {v.num_slices}" for v in volumes)
        raise ValueError(f"data.slices: {list(slices)} selects no slice of any volume (slices per volume: {counts})")
    for volume in [v for v in volumes if not chosen[v.name]]:
        log.warning("skipping %s: data.slices %s selects none of its %d slices", volume.name, list(slices),
                    volume.num_slices)
        skipped[volume.name] = f"data.slices {list(slices)} selects none of its {volume.num_slices} slices"
        del chosen[volume.name]
    volumes = [v for v in volumes if v.name in chosen]
    # 4. The run record: a folder holding another run is refused before anything is written.
    prior_id = prior_identity(prior) if prior is not None and any(m.is_sampler for m in methods.values()) else None
    check_record(out_dir, {
        **dataset.describe(), "code_version": __version__, "seed": seed, "slice_batch": int(slice_batch),
        "data.slices": None if slices is None else list(slices), "settings": settings,
        "files": {v.name: file_identity(path) for path, v in opened},
        "methods": {name: method_record(m, prior, precision, prior_id) for name, m in methods.items()},
    })
    writer = RowWriter(out_dir / "rows" / f"shard-{shard.index}-of-{shard.count}.csv")
    manifest = {"volumes": chosen, "skipped": skipped, "notes": list(notes)}
    atomic_write_text(out_dir / "rows" / f"manifest-{shard.index}-of-{shard.count}.json", json.dumps(manifest))

    # 5. This shard's problems (slice batches of a volume under a setting), in a fixed order;
    #    finished keys are skipped.
    problems = [(v, chosen[v.name][k : k + slice_batch], s) for v in volumes
                for k in range(0, len(chosen[v.name]), slice_batch) for s in settings]
    mine = problems[shard.index :: shard.count]
    new = 0
    for volume, indices, setting in mine:
        todo = [m for m in methods if any((setting, m, volume.name, i) not in done for i in indices)
                and (methods[m].acquires or not is_active(settings[setting]))]
        if not todo:
            continue
        if max_items is not None and new >= max_items:
            break
        new += 1
        generators = [torch.Generator().manual_seed(item_seed(seed, volume.name, i, setting)) for i in indices]
        try:
            problem = volume.problem(indices, settings[setting], generators=generators)
        except (ValueError, OSError) as err:  # slices that cannot be read or prepared
            log.warning("%s slices %s (%s): %s", volume.name, indices, setting, err)
            for method in todo:
                for i in indices:
                    writer.append({"setting": setting, "method": method, "volume": volume.name, "slice": i,
                                   "error": f"{type(err).__name__}: {err}"})
            continue
        if problem.target is not None:
            for b, i in enumerate(indices):
                _save_npy(target_path(out_dir, volume.name, i), problem.target[b, 0].numpy())
        for method in todo:
            rows = _run_method(methods[method], problem, prior, volume, indices, setting, seed, out_dir,
                               device=device, precision=precision, compile_mode=compile_mode)
            for row in rows:
                if (setting, method, volume.name, row["slice"]) not in done:
                    writer.append(row)
    return new, skipped


def _slice_range(num_slices: int, slices: Sequence[int] | None) -> list[int]:
    if slices is None:
        return list(range(num_slices))
    if len(slices) != 2 or not all(isinstance(i, int) for i in slices):
        raise ValueError(f"data.slices: expected [start, stop] (integers, a Python range), got {slices!r}")
    return list(range(num_slices))[slices[0] : slices[1]]


def _run_method(method: Method, problem: Problem, prior: Denoiser | None, volume: Volume, indices: Sequence[int],
                setting: str, seed: int, out_dir: Path, *, device, precision: str,
                compile_mode: str | bool) -> list[dict]:
    """One method on one slice batch: a row per slice (metrics when there is a target, or the error)."""
    keys = [{"setting": setting, "method": method.name, "volume": volume.name, "slice": i} for i in indices]
    generator = torch.Generator().manual_seed(item_seed(seed, volume.name, indices[0], f"{setting}/{method.name}"))
    start = time.perf_counter()
    try:
        x, info = run_method(method, problem, prior, generator=generator, device=device, precision=precision,
                             compile_mode=compile_mode)
        images = problem.image(x)[:, 0].numpy()
        if not np.all(np.isfinite(images)):
            raise FloatingPointError("the reconstruction holds NaN or infinite values")
    except (ValueError, FloatingPointError, RuntimeError) as err:
        log.warning("%s slices %s %s %s: %s", volume.name, list(indices), setting, method.name, err)
        seconds = (time.perf_counter() - start) / len(indices)
        return [{**key, "seconds": seconds, "error": f"{type(err).__name__}: {err}"} for key in keys]
    seconds = (time.perf_counter() - start) / len(indices)
    rows = []
    for b, key in enumerate(keys):
        _save_npy(slice_path(out_dir, setting, method.name, volume.name, key["slice"]), images[b])
        if "order" in info:
            _save_acquisition(acquisition_path(out_dir, setting, method.name, volume.name, key["slice"]), info, b)
        row = {**key, "nfe": info["nfe"], "seconds": seconds}
        if problem.target is not None:
            row.update(slice_metrics(problem.target[b, 0].numpy(), images[b], volume.data_max))
            log.info("%s slice %d %s %s: PSNR %.2f SSIM %.3f in %.1f s", volume.name, key["slice"], setting,
                     method.name, row["psnr"], row["ssim"], seconds)
        rows.append(row)
    return rows
