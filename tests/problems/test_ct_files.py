"""Sinogram files: reading, writing, errors, the noise estimate, and the problem they give."""

import h5py
import numpy as np
import pytest
import torch

from invdiff.problems import ct, ct_sinogram, read_sinogram, write_sinogram
from invdiff.problems.ct_files import estimate_sinogram_noise_std
from invdiff.problems.images import ground_truth, read_image_file
from operators import ParallelBeamCT, sparse_view_angles


def _sinogram(size: int = 16, views: int = 8, slices: int = 2, noise_std: float = 0.1, seed: int = 0):
    """``(slices, views, detectors)`` noisy projections of random images, the angles and the images."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(slices, 1, size, size, generator=g)
    op = ParallelBeamCT((size, size), sparse_view_angles(views))
    y = op.A(image)[:, 0]
    return y + noise_std * torch.randn(y.shape, generator=g), op.angles, image[:, 0]


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_write_and_read_round_trip(suffix, tmp_path):
    sinogram, angles, image = _sinogram()
    path = write_sinogram(tmp_path / f"s{suffix}", sinogram, angles, image)
    s, a, im, meta = read_sinogram(path)
    torch.testing.assert_close(s, sinogram)
    torch.testing.assert_close(a, angles)
    torch.testing.assert_close(im, image)
    assert meta["slices"] == [0, 1] and meta["views"] == 8 and meta["reference"]
    s, _, im, _ = read_sinogram(write_sinogram(tmp_path / f"one{suffix}", sinogram[0], angles))
    assert s.shape == (1, *sinogram.shape[1:]) and im is None


def test_problem_from_a_file_matches_the_simulated_ct_task(tmp_path):
    simulated = ct(size=16, views=10, noise_std=0.2, image="phantom")
    path = write_sinogram(tmp_path / "ct.npz", simulated.y[:, 0], simulated.op.angles, simulated.target[:, 0])
    problem = ct_sinogram(str(path), noise_std=0.2)
    assert problem.name == "ct_sinogram" and problem.x_shape == simulated.x_shape
    torch.testing.assert_close(problem.y, simulated.y)
    torch.testing.assert_close(problem.target, simulated.target)
    assert problem.noise_std == pytest.approx(0.2) and problem.baseline == "fbp"
    torch.testing.assert_close(problem.op.fbp(problem.y), simulated.op.fbp(simulated.y))
    assert problem.score(simulated.x_true)["nmse"] == 0


def test_defaults_without_a_reference_and_the_options(tmp_path):
    sinogram, angles, _ = _sinogram(slices=3)
    detectors = sinogram.shape[-1]
    path = write_sinogram(tmp_path / "s.h5", sinogram, None)
    problem = ct_sinogram(str(path), angles_deg=[0, 180])
    assert problem.target is None and problem.score(torch.zeros(problem.x_shape)) is None
    assert problem.x_shape == (3, 1, detectors, detectors)  # the image side defaults to the detector count
    torch.testing.assert_close(problem.op.angles, angles)
    assert problem.info["noise_rule"] == "mad_second_difference" and problem.noise_std > 0
    scaled = ct_sinogram(str(path), angles_deg=[0, 180], image_size=[16, 20], noise_std=0.5, scale=4.0,
                         slices=[-1])
    assert scaled.x_shape == (1, 1, 16, 20) and scaled.info["slices"] == [2]
    torch.testing.assert_close(scaled.y, 4.0 * sinogram[2:, None])
    assert scaled.noise_std == pytest.approx(2.0) and scaled.scale == 4.0
    half = ct_sinogram(str(path), angles_deg=[0, 180], detector_spacing=0.5)
    assert half.x_shape[-1] == round(detectors / 2)


# --- errors -------------------------------------------------------------------------------


def _h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return str(path)


@pytest.mark.parametrize(
    ("arrays", "kwargs", "message"),
    [
        ({"projections": np.zeros((4, 9))}, {}, r"no 'sinogram' dataset \(found \['projections'\]\)"),
        ({"sinogram": np.zeros(9), "angles": np.zeros(1)}, {}, r"'sinogram' has shape \(9,\)"),
        ({"sinogram": np.zeros((4, 9))}, {}, r"no 'angles' dataset; .*task.angles_deg"),
        ({"sinogram": np.zeros((4, 9)), "angles": np.zeros(5)}, {},
         r"'angles' has shape \(5,\); expected \(4,\)"),
        ({"sinogram": np.zeros((4, 9)), "angles": np.zeros(9)}, {}, "may be transposed"),
        ({"sinogram": np.zeros((4, 9)), "angles": [0, 45, 90, 135]}, {}, "expected radians"),
        ({"sinogram": np.full((4, 9), np.nan), "angles": np.zeros(4)}, {}, "'sinogram' holds non-finite"),
        ({"sinogram": np.zeros((2, 4, 9)), "angles": np.zeros(4), "image": np.zeros((3, 8, 8))}, {},
         r"'image' has shape \(3, 8, 8\)"),
        ({"sinogram": np.zeros((4, 9)), "angles": np.zeros(4), "image": np.zeros((8, 8))}, {"image_size": 6},
         "image_size: .* differs from the reference"),
    ],
)
def test_bad_file_errors_name_the_file_and_key(arrays, kwargs, message, tmp_path):
    path = _h5(tmp_path / "bad.h5", **arrays)
    with pytest.raises(ValueError, match=message) as err:
        ct_sinogram(path, noise_std=1.0, **kwargs)
    assert "bad.h5" in str(err.value)


def test_missing_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        ct_sinogram(str(tmp_path / "nothere.npz"))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz: unreadable .npz"):
        ct_sinogram(str(tmp_path / "broken.npz"))
    (tmp_path / "s.mat").write_bytes(b"")
    with pytest.raises(ValueError, match=r"s.mat: unknown sinogram format '.mat'"):
        ct_sinogram(str(tmp_path / "s.mat"))
    with pytest.raises(ValueError, match="task.file"):
        ct_sinogram("???")


def test_bad_options_name_the_task_key(tmp_path):
    sinogram, angles, _ = _sinogram()
    path = str(write_sinogram(tmp_path / "s.npz", sinogram, angles))
    for kwargs, key in [({"noise_std": 0.0}, "task.noise_std"), ({"scale": -1.0}, "task.scale"),
                        ({"slices": [5]}, "task.slices"), ({"detector_spacing": 0}, "task.detector_spacing"),
                        ({"image_size": [4, 0]}, "image_size"), ({"angles_deg": [180, 0]}, "angles_deg")]:
        with pytest.raises(ValueError, match=key):
            ct_sinogram(path, **kwargs)


# --- noise estimate -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_noise_estimate_of_white_noise(seed):
    g = torch.Generator().manual_seed(seed)
    assert estimate_sinogram_noise_std(0.3 * torch.randn(30, 91, generator=g)) == pytest.approx(0.3, rel=0.04)


def _real_ct_sinograms(tmp_path):
    pydicom_data = pytest.importorskip("pydicom.data")
    yield "ct test image, 64", ground_truth("ct", 64, 0, complex_=False, data_root=tmp_path)
    dicom = pydicom_data.get_testdata_file("CT_small.dcm", download=False)
    yield "CT_small.dcm, 128", read_image_file(dicom)[0]


def test_noise_estimate_on_simulated_ct_sinograms(tmp_path):
    """Within 10 % once the noise dominates the image's own pixel-scale detail (s = 1 here), an
    overestimate below that (the module docstring's table)."""
    for name, x in _real_ct_sinograms(tmp_path):
        op = ParallelBeamCT(tuple(x.shape[-2:]), sparse_view_angles(60))
        clean = op.A(x.double())
        for s, low, high in ((1.0, 0.9, 1.1), (0.5, 0.95, 1.2), (0.2, 1.0, 1.5)):
            g = torch.Generator().manual_seed(1)
            noise = s * torch.randn(clean.shape, generator=g, dtype=clean.dtype)
            estimate = estimate_sinogram_noise_std(clean + noise)
            assert low * s <= estimate <= high * s, (name, s, estimate)
