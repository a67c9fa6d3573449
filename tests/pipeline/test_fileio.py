"""Atomic writes: the old file survives a failed write, and no temporary file is left behind."""

from __future__ import annotations

import pytest

from invdiff.fileio import atomic_write, atomic_write_text


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
