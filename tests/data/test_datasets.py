import json

import numpy as np
import pytest
import torch

from invdiff.data.anatomy import SPLITS, split_slices
from invdiff.data.datasets import (
    CT_SPLITS,
    NATURAL_SPLITS,
    ct,
    load_split,
    mri_brain,
    mri_brain_fastmri,
    natural,
)
from invdiff.data.fastmri import load_folder, reconstruct_rss


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_splits_share_no_slices_or_neighbours():
    sets = {s: set(split_slices(s)) for s in SPLITS}
    for a in sets:
        for b in sets:
            if a < b:
                gap = min(abs(i - j) for i in sets[a] for j in sets[b])
                assert gap >= 4, (a, b, gap)
    for splits in (NATURAL_SPLITS, CT_SPLITS):
        names = [set(v) for v in splits.values()]
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_mri_brain_dataset_is_built_once_and_reused(tmp_path):
    folder = mri_brain(tmp_path, size=16, variants=(2, 1, 1))
    train = load_split(folder, "train")
    assert train.shape == (2 * len(split_slices("train")), 2, 16, 16)
    magnitude = np.hypot(train[:, 0].astype(np.float32), train[:, 1].astype(np.float32))
    assert 0.9 < magnitude.max() <= 1.01
    stamp = (folder / "train.npy").stat().st_mtime_ns
    assert mri_brain(tmp_path, size=16, variants=(2, 1, 1)) == folder
    assert (folder / "train.npy").stat().st_mtime_ns == stamp
    assert json.loads((folder / "info.json").read_text())["size"] == 16


def test_ct_and_natural_datasets(tmp_path):
    for build, channels in ((ct, 1), (natural, 1)):
        folder = build(tmp_path, size=16, counts=(8, 2, 2))
        for split, n in zip(("train", "val", "test"), (8, 2, 2)):
            x = load_split(folder, split)
            assert x.shape == (n, channels, 16, 16)
            assert 0 <= x.min() and x.max() <= 1


def test_fastmri_brain_volumes_read_back(tmp_path):
    folder = mri_brain_fastmri(tmp_path, size=16, coils=4, slab=8)
    volumes, errors = load_folder(folder)
    assert volumes and not errors
    v = volumes[0]
    assert v.kspace.shape == (8, 4, 32, 16)
    rss = reconstruct_rss(v.kspace, (16, 16))
    assert float((rss - v.reconstruction_rss).norm() / v.reconstruction_rss.norm()) < 0.05


def test_load_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_data"):
        load_split(tmp_path, "train")
    np.save(tmp_path / "train.npy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"expected an \(N, C, H, W\) array"):
        load_split(tmp_path, "train")
