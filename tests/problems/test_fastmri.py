"""Problems from fastMRI files: no oracle information, prospective and single-coil files, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from invdiff.data.datasets import mri_brain_fastmri
from invdiff.problems.fastmri import MapsOptions, acs_kernel_width, fastmri_problem, open_fastmri, sampling_mask
from invdiff.run import Method, run_method
from operators import fastmri_mask, volume_seed

NOISE_STD = 0.002  # the generated files' k-space noise
CG = Method("cg", baseline="cg", params={"max_iter": 20})


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Generated brain volumes, 8 slices, 32 x 32 images in 64 x 40 k-space (2x readout), 4 coils."""
    root = tmp_path_factory.mktemp("fastmri")
    common = {"size": 32, "width": 40, "slab": 8}
    return {
        "full": mri_brain_fastmri(root, coils=4, **common),
        "test": mri_brain_fastmri(root, coils=4, acceleration=4, **common),
        "single": mri_brain_fastmri(root, single_coil=True, **common),
    }


def _file(folders, kind: str, v: int = 0) -> Path:
    return sorted(folders[kind].glob("*.h5"))[v]


def _cg(problem) -> np.ndarray:
    x, _ = run_method(CG, problem, generator=torch.Generator().manual_seed(0))
    return problem.output(x)


def test_a_fully_sampled_file_is_undersampled_with_the_mask_for_its_name(folders):
    path = _file(folders, "full")
    problem = fastmri_problem(path, [2, 5], acceleration=4)
    mask = fastmri_mask((64, 40), 4, kind="equispaced", seed=volume_seed(path.name))[0]
    assert problem.x_shape == (2, 2, 32, 40) and problem.crop == (32, 32) and problem.is_complex
    assert problem.target.shape == (2, 1, 32, 32) and problem.data_range == pytest.approx(1.0)
    unsampled = problem.y[..., mask == 0]
    assert torch.count_nonzero(unsampled) == 0 and torch.count_nonzero(problem.y[..., mask > 0]) > 0
    assert problem.info["prospective"] is False and problem.info["slices"] == [2, 5]
    assert problem.image(torch.zeros(problem.x_shape)).shape == (2, 1, 32, 32)
    score = problem.score(torch.zeros(problem.x_shape))
    assert score["nmse"] == pytest.approx(1.0)


def test_the_estimates_come_from_the_measured_data(folders):
    path = _file(folders, "full")
    file = open_fastmri(path)
    for acceleration in (4, 8):
        problem = fastmri_problem(path, [3], acceleration=acceleration)
        info = problem.info
        assert info["noise_rule"] == "readout_background" and info["scale_rule"] == "acs_max"
        # the generated noise is 0.002; the readout background holds noise alone
        assert info["noise_std"] == pytest.approx(NOISE_STD, rel=0.05)
        # the ACS image's peak is the reference maximum to within a third
        assert info["scale"] == pytest.approx(1 / file.data_max, rel=0.35)
        assert problem.noise_std == pytest.approx(info["noise_std"] * info["scale"])
    oracle = fastmri_problem(path, [3], scale="oracle", noise_std=NOISE_STD)
    assert oracle.scale == pytest.approx(1 / file.data_max) and oracle.info["noise_rule"] == "given"


def test_a_reconstruction_ignores_the_reference(folders, tmp_path):
    source = _file(folders, "full")
    changed = tmp_path / source.name  # same name, so the same mask
    shutil.copy(source, changed)
    with h5py.File(changed, "a") as f:
        f["reconstruction_rss"][...] = np.random.default_rng(0).random(f["reconstruction_rss"].shape) * 7
        f.attrs["max"] = 7.0
    a, b = fastmri_problem(source, [4]), fastmri_problem(changed, [4])
    assert a.info["scale"] == b.info["scale"] and a.info["noise_std"] == b.info["noise_std"]
    torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)
    np.testing.assert_array_equal(_cg(a), _cg(b))
    assert a.score(torch.zeros(a.x_shape)) != b.score(torch.zeros(b.x_shape))


@pytest.mark.parametrize("c", [4.0, 3.7])
def test_a_reconstruction_scales_with_the_data(folders, tmp_path, c):
    source = _file(folders, "full", 1)
    scaled = tmp_path / source.name
    shutil.copy(source, scaled)
    with h5py.File(scaled, "a") as f:
        f["kspace"][...] = f["kspace"][()] * np.complex64(c)
    a, b = fastmri_problem(source, [4], acceleration=8), fastmri_problem(scaled, [4], acceleration=8)
    assert b.info["scale"] == pytest.approx(a.info["scale"] / c, rel=1e-4)
    assert b.info["noise_std"] == pytest.approx(a.info["noise_std"] * c, rel=1e-4)
    np.testing.assert_allclose(_cg(b), c * _cg(a), rtol=1e-3, atol=1e-4 * c * np.abs(_cg(a)).max())


def test_a_prospective_file_uses_its_own_mask_and_has_no_reference(folders):
    path = _file(folders, "test")
    with h5py.File(path) as f:
        mask = np.asarray(f["mask"], dtype=np.float32)
    problem = fastmri_problem(path, [0], acceleration=8)  # the file's mask wins
    assert problem.target is None and problem.score(torch.zeros(problem.x_shape)) is None
    assert problem.info["prospective"] is True and problem.info["acceleration"] is None
    assert problem.info["mask_columns"] == int(mask.sum())
    assert torch.equal(sampling_mask(open_fastmri(path)), torch.from_numpy(mask))
    assert problem.info["noise_std"] == pytest.approx(NOISE_STD, rel=0.05)
    assert _cg(problem).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match=r"brain_test_000\.h5: coil_maps=oracle needs fully sampled k-space"):
        fastmri_problem(path, [0], maps=MapsOptions("oracle"))
    with pytest.raises(ValueError, match=r"scale=oracle needs a reference volume"):
        fastmri_problem(path, [0], scale="oracle")


def test_the_prospective_file_and_its_fully_sampled_source_give_the_same_problem(folders):
    """The test file is the fully sampled file masked: same mask, same estimates, same measurement."""
    full = fastmri_problem(_file(folders, "full"), [6], acceleration=4)
    test = fastmri_problem(_file(folders, "test"), [6])
    assert full.info["mask_columns"] == test.info["mask_columns"]
    assert full.info["scale"] == pytest.approx(test.info["scale"], rel=1e-6)
    assert full.info["noise_std"] == pytest.approx(test.info["noise_std"], rel=1e-6)
    torch.testing.assert_close(full.y, test.y)


def test_single_coil_files(folders):
    problem = fastmri_problem(_file(folders, "single"), [1], acceleration=4)
    assert problem.y.shape == (1, 1, 32, 40) and problem.support is None
    assert problem.target.shape == (1, 1, 32, 32) and problem.info["maps_estimator"] == "single coil"
    assert problem.score(torch.zeros(problem.x_shape))["nmse"] == pytest.approx(1.0)
    assert np.isfinite(_cg(problem)).all()


def test_oracle_maps_are_cached(folders, tmp_path):
    path = _file(folders, "full")
    first = fastmri_problem(path, [0], maps=MapsOptions("oracle", cache_dir=tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["brain_test_000-0000-oracle.npy"]
    second = fastmri_problem(path, [0], maps=MapsOptions("oracle", cache_dir=tmp_path))
    torch.testing.assert_close(first.op.ops[0].coil_maps, second.op.ops[0].coil_maps)


def test_the_acs_kernel_narrows_for_narrow_blocks():
    assert [acs_kernel_width(w) for w in (2, 3, 5, 8, 11, 12, 15, 30)] == [2, 2, 3, 4, 6, 6, 6, 6]


def test_bad_files_name_the_file_and_key(folders, tmp_path):
    no_kspace = tmp_path / "no_kspace.h5"
    with h5py.File(no_kspace, "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"no_kspace\.h5: no 'kspace' dataset"):
        open_fastmri(no_kspace)
    wrong_mask = tmp_path / "wrong_mask.h5"
    shutil.copy(_file(folders, "test"), wrong_mask)
    with h5py.File(wrong_mask, "a") as f:
        del f["mask"]
        f.create_dataset("mask", data=np.ones(38, bool))
    with pytest.raises(ValueError, match=r"wrong_mask\.h5: 'mask' has 38 columns, 'kspace' has 40"):
        open_fastmri(wrong_mask)
    with pytest.raises(IndexError, match=r"brain_test_000\.h5: slice 8 is out of range for a volume of 8 slices"):
        fastmri_problem(_file(folders, "full"), [8])
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        open_fastmri(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="coil_maps: expected one of"):
        MapsOptions("espirit")
