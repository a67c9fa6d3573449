"""Atomic writes: the old file survives a failed write, and no temporary file is left behind."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from invdiff.fileio import atomic_path, atomic_write, atomic_write_text


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "table.csv"
    atomic_write_text(path, "a,b\n")
    assert path.read_text() == "a,b\n"

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, crash)
    assert path.read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_path_writes_a_pid_named_sibling_and_renames_it(tmp_path):
    path = tmp_path / "sub" / "volume.h5"
    with pytest.raises(FileNotFoundError):
        atomic_write_text(path, "no folder")
    assert not (tmp_path / "sub").exists()
    with atomic_path(path, mkdir=True) as tmp, h5py.File(tmp, "w") as f:
        assert tmp == path.with_name(f".volume.h5.tmp{os.getpid()}")
        f.create_dataset("x", data=np.arange(3))
        assert not path.exists()
    with h5py.File(path, "r") as f:
        assert f["x"][()].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="half written"):
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("x", data=np.zeros(5))
            raise ValueError("half written")
    with h5py.File(path, "r") as f:
        assert f["x"].shape == (3,)
    atomic_write_text(tmp_path / "deep" / "er" / "note.txt", "hi", mkdir=True)
    assert (tmp_path / "deep" / "er" / "note.txt").read_text() == "hi"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["volume.h5"]
