import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invdiff.metrics import nmse, psnr, ssim


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    gt = rng.random((3, 40, 33)) + np.linspace(0, 1, 33)
    return gt, gt + 0.1 * rng.standard_normal(gt.shape)


def test_psnr_matches_skimage(pair):
    gt, pred = pair
    assert psnr(gt, pred) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=gt.max()), rel=1e-12)


def test_ssim_matches_skimage_per_slice(pair):
    gt, pred = pair
    expected = np.mean([structural_similarity(g, p, data_range=gt.max()) for g, p in zip(gt, pred)])
    assert ssim(gt, pred) == pytest.approx(expected, rel=1e-10)


def test_nmse_and_identity(pair):
    gt, pred = pair
    assert nmse(gt, pred) == pytest.approx(np.sum((gt - pred) ** 2) / np.sum(gt**2))
    assert nmse(gt, gt) == 0 and psnr(gt, gt) == float("inf") and ssim(gt, gt) == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(ValueError, match="pred: expected the shape"):
        psnr(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="complex"):
        nmse(np.ones((4, 4), dtype=complex), np.ones((4, 4)))
    with pytest.raises(ValueError, match="gt: expected images of at least 7x7"):
        ssim(np.ones((5, 5)), np.ones((5, 5)))
