"""A data root (``INVDIFF_DATA`` or ``data_root=``) that cannot hold the generated data is named."""

import pytest

from invdiff.data import datasets
from invdiff.data.datasets import mri_brain, mri_brain_fastmri

pytestmark = pytest.mark.hostile


def test_a_data_root_that_is_a_file_is_named(tmp_path):
    root = tmp_path / "not_a_folder"
    root.write_text("")
    with pytest.raises(ValueError, match=rf"data_root: {root} is a file, not a folder; set INVDIFF_DATA"):
        mri_brain(root, size=16, splits=("test",))
    with pytest.raises(ValueError, match=rf"data_root: {root} is a file"):
        mri_brain_fastmri(root, size=16, slab=2)


def test_an_existing_complete_dataset_needs_no_write_access(tmp_path, monkeypatch):
    folder = mri_brain(tmp_path, size=16, splits=("test",))
    monkeypatch.setattr("os.access", lambda *args, **kwargs: False)
    assert mri_brain(tmp_path, size=16, splits=("test",)) == folder
    with pytest.raises(ValueError, match=rf"data_root: {tmp_path / 'new'} is not writable"):
        datasets.data_folder(tmp_path / "new")
