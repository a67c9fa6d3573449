"""Classical MRI and CT baselines: zero-filled, L1-wavelet compressed sensing (sigpy), TV by PDHG."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy.mri
import torch

from invdiff.data.phantoms import complex_phantom, phantom
from invdiff.samplers import BASELINES, fbp_baseline, l1_wavelet, tv, zero_filled
from operators.base import Matrix, RealToComplex
from operators.ct import ParallelBeamCT
from operators.masks import fastmri_mask
from operators.mri import MultiCoilMRI
from operators.noise import GaussianNoise
from operators.nonlinear import PhaseRetrieval
from tests.samplers import seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)

AXES = (-2, -1)
SIZE, COILS = 32, 8


def _np_ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=AXES), norm="ortho"), axes=AXES)


def _maps(size: int = SIZE, coils: int = COILS) -> torch.Tensor:
    return torch.from_numpy(sigpy.mri.birdcage_maps((coils, size, size))).to(torch.complex128)


def _mri_problem(B: int = 2, noise_std: float = 0.005, embedded: bool = True):
    """Complex phantoms under 2x equispaced lines: ``(op, x_true, y)``, ``x_true`` in the op's domain."""
    mask = fastmri_mask((SIZE, SIZE), 2, 0.16, kind="equispaced", seed=0).double()
    mri = MultiCoilMRI(_maps(), mask)
    images = torch.stack([complex_phantom(SIZE, i) for i in range(B)])[:, None].to(torch.complex128)
    op, x = (mri @ RealToComplex(), RealToComplex().AT(images)) if embedded else (mri, images)
    y = GaussianNoise(noise_std)(op.A(x), generator=seeded(1)) * mask
    return op, x, y


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    return (RealToComplex().A(x) if not x.is_complex() else x).abs()


def _error(x: torch.Tensor, x_true: torch.Tensor) -> torch.Tensor:
    """Per-sample relative error of the magnitudes, ``(B,)``."""
    diff = (_magnitude(x) - _magnitude(x_true)).flatten(1).norm(dim=1)
    return diff / _magnitude(x_true).flatten(1).norm(dim=1)


def test_registered():
    assert BASELINES["zero_filled"] is zero_filled
    assert BASELINES["l1_wavelet"] is l1_wavelet
    assert BASELINES["tv"] is tv


# --- sigpy's model is ours ------------------------------------------------------------------------


def test_sigpy_sense_equals_multicoil_mri():
    """``sigpy.mri.linop.Sense(mps, weights=w)`` is ``sqrt(w) * F_c(S x)``: our ``op.A`` for ``w = mask``
    with a 0/1 mask and for ``w = mask**2`` with density weights."""
    maps = _maps()
    x = torch.randn(SIZE, SIZE, generator=seeded(0), dtype=torch.complex128)
    binary = fastmri_mask((SIZE, SIZE), 4, 0.16, kind="equispaced", seed=0).double()
    density = binary * torch.rand(SIZE, generator=seeded(2), dtype=torch.float64)[None]
    for mask, weights in ((binary, binary), (density, density.square())):
        ours = MultiCoilMRI(maps, mask).A(x[None, None])[0].numpy()
        theirs = sigpy.mri.linop.Sense(maps.numpy(), weights=weights.numpy())(x.numpy())
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-12 * np.abs(ours).max())


# --- zero-filled ----------------------------------------------------------------------------------


@pytest.mark.parametrize("embedded", [True, False])
def test_zero_filled_is_numpy_rss(embedded):
    op, _, y = _mri_problem(embedded=embedded)
    x, info = zero_filled(op, y)
    expected = np.sqrt((np.abs(_np_ifft2c(y.numpy())) ** 2).sum(axis=1))
    if embedded:
        assert x.shape == (2, 2, SIZE, SIZE) and x.dtype == torch.float64
        np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=1e-12, atol=1e-14)
        assert bool((x[:, 1] == 0).all())
    else:
        assert x.shape == (2, 1, SIZE, SIZE) and x.dtype == torch.complex128
        np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=1e-12, atol=1e-14)
    assert info["nfe"] == 0 and info["seconds"] >= 0


def test_mri_baselines_need_an_mri_operator():
    ct = ParallelBeamCT((8, 8), 6)
    for fn in (zero_filled, l1_wavelet):
        name = fn.__name__
        with pytest.raises(ValueError, match=rf"{name}: op: expected MultiCoilMRI.*RealToComplex.*Matrix"):
            fn(Matrix(torch.ones(2, 3)), torch.zeros(1, 2))
        with pytest.raises(ValueError, match=rf"{name}: op: expected MultiCoilMRI.*ParallelBeamCT"):
            fn(ct, torch.zeros(1, 1, 6, ct.n_detectors))
        with pytest.raises(ValueError, match=rf"{name}: op: expected MultiCoilMRI"):
            fn(RealToComplex() @ Matrix(torch.ones(4, 4), (4,)), torch.zeros(1, 2, dtype=torch.complex64))
    op, _, y = _mri_problem()
    with pytest.raises(ValueError, match=r"zero_filled: y: expected complex zero-filled k-space \(B, 8, 32"):
        zero_filled(op, y[:, :2])
    with pytest.raises(ValueError, match=r"l1_wavelet: y: expected complex"):
        l1_wavelet(op, y.real)
    with pytest.raises(ValueError, match="lamda"):
        l1_wavelet(op, y, lamda=-1.0)


# --- L1-wavelet compressed sensing ----------------------------------------------------------------


@pytest.mark.parametrize("embedded", [True, False])
def test_l1_wavelet_beats_zero_filled(embedded):
    """Observed relative magnitude errors (8 coils, 2x): zero-filled 0.41, L1-wavelet 0.05-0.06."""
    op, x_true, y = _mri_problem(embedded=embedded)
    x_zf, _ = zero_filled(op, y)
    x, info = l1_wavelet(op, y, max_iter=30)
    assert x.shape == x_true.shape and x.dtype == x_true.dtype
    assert bool((_error(x, x_true) < 0.25 * _error(x_zf, x_true)).all())
    assert info["nfe"] == 0 and info["lamda"] == 3e-4
    again, _ = l1_wavelet(op, y, max_iter=30)
    assert torch.equal(x, again)
    # Each sample is its own problem.
    alone, _ = l1_wavelet(op, y[1:], max_iter=30)
    torch.testing.assert_close(alone, x[1:], rtol=0, atol=1e-12)


# --- total variation ------------------------------------------------------------------------------


def _ct_problem(B: int = 2, views: int = 12, noise_std: float = 0.2):
    op = ParallelBeamCT((SIZE, SIZE), views)
    x = torch.stack([phantom(SIZE, i) for i in range(B)])[:, None].double()
    return op, x, GaussianNoise(noise_std)(op.A(x), generator=seeded(3))


def _rel(x: torch.Tensor, x_true: torch.Tensor) -> torch.Tensor:
    return (x - x_true).flatten(1).norm(dim=1) / x_true.flatten(1).norm(dim=1)


def test_tv_beats_fbp_on_sparse_view_ct():
    """Observed relative errors at 12 views: FBP 0.47-0.53, TV (lam 0.3, 100 iterations) 0.28-0.30."""
    op, x_true, y = _ct_problem()
    x_fbp, _ = fbp_baseline(op, y)
    x, info = tv(op, y, iterations=100)
    assert x.shape == x_true.shape and x.dtype == x_true.dtype
    assert bool((_rel(x, x_true) < 0.7 * _rel(x_fbp, x_true)).all())
    assert info["nfe"] == 0 and info["objective"].shape == (2,) and info["iterations"] == 100
    again, _ = tv(op, y, iterations=100)
    assert torch.equal(x, again)
    positive, _ = tv(op, y, iterations=100, nonnegative=True)
    assert bool((positive >= 0).all())


def test_tv_samples_are_independent_problems():
    op, _, y = _ct_problem(B=3)
    x, _ = tv(op, y, iterations=30)
    other = y.clone()
    other[1:] = 5 * other[1:].flip(-1)
    x_other, _ = tv(op, other, iterations=30)
    torch.testing.assert_close(x_other[0], x[0], rtol=0, atol=1e-12)


def test_tv_decreases_its_objective():
    op, _, y = _ct_problem(B=1)
    objectives = [float(tv(op, y, iterations=n)[1]["objective"]) for n in (10, 50, 200)]
    assert objectives[0] > objectives[1] > objectives[2]


def test_tv_small_lambda_is_least_squares():
    """As lam -> 0 the TV solution tends to the (here unique) least-squares solution."""
    M = torch.randn(40, 16, generator=seeded(4), dtype=torch.float64)
    op = Matrix(M, (1, 4, 4))
    y = torch.randn(2, 40, generator=seeded(5), dtype=torch.float64)
    expected = torch.linalg.lstsq(M, y.T).solution.T.reshape(2, 1, 4, 4)
    errors = [float(_rel(tv(op, y, lam=lam, iterations=1500, step_ratio=1.0)[0], expected).max())
              for lam in (1.0, 1e-2, 1e-8)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5


def test_tv_bad_input():
    with pytest.raises(ValueError, match="tv: op: expected a LinearOperator"):
        tv(PhaseRetrieval(2.0), torch.zeros(1, 1, 8, 8))
    op, _, y = _mri_problem(embedded=False)
    with pytest.raises(ValueError, match=r"tv: op: expected an operator on real images.*RealToComplex"):
        tv(op, y)
    ct, _, y = _ct_problem(B=1)
    with pytest.raises(ValueError, match="tv: lam"):
        tv(ct, y, lam=-0.1)
    with pytest.raises(ValueError, match="tv: iterations"):
        tv(ct, y, iterations=0)
