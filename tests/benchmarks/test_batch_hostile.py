"""Hostile input to the batch benchmarks: damaged run folders, bad files, stale results, killed merges.

Each test runs filtered back-projection (or zero filling) on a few small slices, so that the suite
stays fast; the engine's behaviour on samplers is the same and is covered by ``test_batch.py``.
"""

from __future__ import annotations

import pytest

from invdiff.batch import read_rows, run_batch
from invdiff.batch.engine import ROW_FIELDS
from invdiff.batch.folders import CTFolder
from invdiff.run import Method
from tests.benchmarks.test_batch import CT_SETTINGS, _ct_folder

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
