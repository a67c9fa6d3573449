"""Sampling masks: fastMRI's line masks sample for sample, Poisson-disc masks, accelerations, errors."""

import numpy as np
import pytest
import torch

from operators.masks import acceleration_of, fastmri_mask, poisson_disc_mask, volume_seed

FILE = "file1000001.h5"

# Sampled columns from facebookresearch/fastMRI fastmri/data/subsample.py (commit 91f2df47), called
# as ``MaskFunc([center_fraction], [acceleration])((1, 10, W, 2), seed=seed)`` with RandomMaskFunc
# and EquispacedMaskFractionFunc.
FASTMRI_COLUMNS = [
    ("random", 4, 0.08, 48, FILE, [3, 6, 7, 11, 15, 22, 23, 24, 25, 31, 35, 38]),
    ("random", 4, 0.08, 48, 42, [4, 5, 6, 10, 21, 22, 23, 24, 25, 29, 31, 32, 37, 40, 42]),
    ("random", 8, 0.04, 64, FILE, [6, 7, 11, 31, 32, 33, 57]),
    ("random", 8, 0.04, 64, 42, [6, 10, 29, 31, 32, 33, 42, 58]),
    ("equispaced", 4, 0.08, 48, FILE, [3, 8, 14, 20, 22, 23, 24, 25, 30, 36, 42]),
    ("equispaced_fraction", 4, 0.08, 48, 42, [3, 8, 14, 20, 22, 23, 24, 25, 30, 36, 42]),
]


@pytest.mark.parametrize("kind, acceleration, fraction, W, seed, columns", FASTMRI_COLUMNS)
def test_fastmri_mask_reproduces_fastmri(kind, acceleration, fraction, W, seed, columns):
    seed = volume_seed(seed) if isinstance(seed, str) else seed
    mask = fastmri_mask((10, W), acceleration, fraction, kind=kind, seed=seed)
    assert mask.shape == (10, W) and mask.dtype == torch.float32
    assert torch.equal(mask, mask[:1].expand(10, W)), "lines: constant along H"
    assert mask[0].nonzero().flatten().tolist() == columns


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("acceleration, W", [(4, 368), (8, 372), (4, 37)])
def test_fastmri_centre_lines(kind, acceleration, W):
    fraction = {4: 0.08, 8: 0.04}[acceleration]
    mask = fastmri_mask((3, W), acceleration, kind=kind, seed=0)[0]
    num_low = round(W * fraction)
    pad = (W - num_low + 1) // 2
    assert mask[pad : pad + num_low].eq(1).all()
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_fastmri_random_acceleration_in_expectation():
    W = 368
    for acceleration in (4, 8):
        counts = [fastmri_mask((1, W), acceleration, seed=s).sum().item() for s in range(400)]
        assert np.mean(counts) == pytest.approx(W / acceleration, rel=0.02)


@pytest.mark.parametrize("W", [320, 368, 372, 640])
@pytest.mark.parametrize("acceleration", [4, 8])
def test_fastmri_equispaced_fraction_acceleration(W, acceleration):
    for seed in range(10):
        mask = fastmri_mask((2, W), acceleration, kind="equispaced", seed=seed)
        assert abs(mask[0].sum().item() - W / acceleration) <= 2
        assert acceleration_of(mask) == pytest.approx(acceleration, rel=0.05)


def test_fastmri_seeds():
    a = fastmri_mask((4, 100), 4, seed=3)
    assert torch.equal(a, fastmri_mask((4, 100), 4, seed=3))
    assert not torch.equal(a, fastmri_mask((4, 100), 4, seed=4))
    # 1. Per-volume seeds: one mask per file, whatever the slice or the directory.
    one = fastmri_mask((4, 100), 4, seed=volume_seed(FILE))
    assert volume_seed(FILE) == tuple(map(ord, FILE))
    assert volume_seed(f"/data/knee/multicoil_val/{FILE}") == volume_seed(FILE)
    assert torch.equal(one, fastmri_mask((4, 100), 4, seed=volume_seed("other/" + FILE)))
    assert not torch.equal(one, fastmri_mask((4, 100), 4, seed=volume_seed("file1000002.h5")))
    # 2. No global state is touched.
    state = np.random.get_state()[1].copy()
    fastmri_mask((4, 100), 4, seed=1)
    assert np.array_equal(state, np.random.get_state()[1])


@pytest.mark.parametrize("shape, acceleration", [((64, 48), 4), ((100, 70), 3), ((96, 80), 6)])
def test_poisson_disc_mask(shape, acceleration):
    mask = poisson_disc_mask(shape, acceleration, calib=(12, 10), seed=1)
    assert mask.shape == shape and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs(acceleration_of(mask) - acceleration) < 0.1
    H, W = shape
    assert mask[H // 2 - 6 : H // 2 + 6, W // 2 - 5 : W // 2 + 5].eq(1).all()
    assert torch.equal(mask, poisson_disc_mask(shape, acceleration, calib=(12, 10), seed=1))
    assert not torch.equal(mask, poisson_disc_mask(shape, acceleration, calib=(12, 10), seed=2))


def test_acceleration_of():
    mask = torch.zeros(4, 10)
    mask[:, ::2] = 1
    assert acceleration_of(mask) == 2.0
    batch = torch.stack([mask, torch.ones(4, 10), torch.zeros(4, 10)])
    assert acceleration_of(batch).tolist() == [2.0, 1.0, float("inf")]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fastmri_mask((8, 64), 0.5, 0.1, seed=0), "acceleration"),
        (lambda: fastmri_mask((8, 64), 6, seed=0), "center_fraction"),
        (lambda: fastmri_mask((8, 64), 4, 0.0, seed=0), "center_fraction"),
        (lambda: fastmri_mask((8, 64), 4, 1.2, seed=0), "center_fraction"),
        (lambda: fastmri_mask((8, 64), 4, 0.3, seed=0), "center_fraction"),
        (lambda: fastmri_mask((8, 64), 4, kind="magic", seed=0), "kind"),
        (lambda: fastmri_mask((8, 64, 2), 4, seed=0), "shape"),
        (lambda: fastmri_mask((8, 0), 4, seed=0), "shape"),
        (lambda: fastmri_mask((8, 6.5), 4, seed=0), "shape"),
        (lambda: fastmri_mask(64, 4, seed=0), "shape"),
        (lambda: poisson_disc_mask((32, 32), 1, seed=0), "acceleration"),
        (lambda: poisson_disc_mask((32, 32), 4, calib=(40, 8), seed=0), "calib"),
        (lambda: poisson_disc_mask((32,), 4, seed=0), "shape"),
        (lambda: poisson_disc_mask((32, 32), 4, seed=None), "seed"),
        (lambda: volume_seed(""), "fname"),
        (lambda: acceleration_of(torch.ones(5)), "mask"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
