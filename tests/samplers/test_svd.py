"""The closed-form SVDs: A = U diag(s) V^H, V orthonormal, the spectral measurement and its noise."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.samplers.svd import SVD, svd_of
from operators.base import CenterCrop, Identity, Matrix, Multiply, RealToComplex, Scaled
from operators.ct import ParallelBeamCT
from operators.inpainting import Inpainting
from operators.mri import MultiCoilMRI, SingleCoilMRI
from operators.superres import SuperResolution
from tests.samplers import seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def _mask(shape, seed, weighted=False):
    g = seeded(seed)
    m = (torch.rand(shape, generator=g, dtype=torch.float64) < 0.6).double()
    if weighted:
        m = m * (0.2 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64))
    return m


def _cases():
    """(name, operator, shape of x): every closed form on a small real unknown."""
    g = seeded(0)
    mri_mask = _mask((6, 8), 3)
    mri_mask[:, 4] = 1.0
    return [
        ("identity", Identity(), (2, 1, 4, 4)),
        ("inpainting", Inpainting(_mask((5, 6), 1)), (2, 2, 5, 6)),
        ("inpainting_weighted", Inpainting(_mask((1, 2, 5, 6), 2, weighted=True)), (2, 2, 5, 6)),
        ("multiply_complex", Multiply(torch.randn(4, 5, generator=g, dtype=torch.complex128)), (2, 1, 4, 5)),
        ("center_crop", CenterCrop((6, 7), (4, 4)), (2, 1, 6, 7)),
        ("matrix_wide", Matrix(torch.randn(3, 8, generator=g, dtype=torch.float64), (1, 2, 4)), (3, 1, 2, 4)),
        ("matrix_tall", Matrix(torch.randn(9, 6, generator=g, dtype=torch.float64), (1, 1, 6)), (3, 1, 1, 6)),
        ("matrix_complex", Matrix(torch.randn(3, 6, generator=g, dtype=torch.complex128), (1, 1, 6)), (3, 1, 1, 6)),
        ("scaled_matrix", Scaled(Matrix(torch.randn(2, 5, generator=g, dtype=torch.float64)), -2.5), (3, 5)),
        ("sr_box", SuperResolution(2, "box"), (2, 1, 8, 6)),
        ("sr_bicubic", SuperResolution(2, "bicubic"), (2, 2, 8, 8)),
        ("sr_gaussian3", SuperResolution(3, "gaussian"), (2, 1, 9, 6)),
        ("single_coil_r2c", SingleCoilMRI(mri_mask) @ RealToComplex(), (2, 2, 6, 8)),
        ("scaled_single_coil_r2c", Scaled(SingleCoilMRI(mri_mask), 0.5 - 1.5j) @ RealToComplex(), (2, 4, 6, 8)),
        ("sr_r2c", SuperResolution(2, "bicubic") @ RealToComplex(), (2, 2, 4, 6)),
        ("inpainting_r2c", Inpainting(_mask((4, 4), 4)) @ RealToComplex(), (2, 2, 4, 4)),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


def _x(shape, seed=1):
    return torch.randn(shape, generator=seeded(seed), dtype=torch.float64)


@pytest.mark.parametrize("name,op,shape", CASES, ids=IDS)
def test_decomposition_reproduces_the_operator(name, op, shape):
    svd = svd_of(op)
    assert isinstance(svd, SVD)
    x = _x(shape)
    torch.testing.assert_close(svd.A(x), op.A(x), rtol=1e-10, atol=1e-10)
    # the pseudo-inverse from the SVD is the operator's (minimum-norm least squares)
    y = op.A(x)
    if not isinstance(op, Matrix) or op.matrix.shape[0] <= op.matrix.shape[1]:
        torch.testing.assert_close(op.A(svd.pinv(y)), y, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name,op,shape", CASES, ids=IDS)
def test_V_is_orthonormal(name, op, shape):
    svd = svd_of(op)
    x = _x(shape, seed=2)
    c = svd.Vt(x)
    back = svd.V(c)
    assert back.dtype == x.dtype and back.shape == x.shape
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-10)
    for i in range(shape[0]):
        assert float(c[i].abs().square().sum()) == pytest.approx(float(x[i].square().sum()), rel=1e-10)
    s = svd.s_like(c)
    assert torch.broadcast_shapes(s.shape, c.shape) == c.shape and bool((s >= 0).all())


@pytest.mark.parametrize("name,op,shape", CASES, ids=IDS)
def test_noiseless_measurement_is_the_observed_coordinates(name, op, shape):
    svd = svd_of(op)
    x = _x(shape, seed=3)
    ybar, std = svd.measurement(op.A(x), 0.0)
    c = svd.Vt(x)
    observed = svd.observed(c).expand(c.shape)
    assert bool(observed.any()) and ybar.shape == c.shape
    torch.testing.assert_close(ybar[observed], c[observed], rtol=1e-9, atol=1e-9)
    assert bool((ybar[~observed] == 0).all())
    assert bool((std.expand(c.shape)[observed] == 0).all()) and bool(torch.isinf(std.expand(c.shape)[~observed]).all())


@pytest.mark.parametrize("name,op,shape", CASES, ids=IDS)
def test_spectral_noise_is_std_times_Vt_of_white_noise(name, op, shape):
    """ybar - Vt(x) on the observed coordinates has the second moments (E|e|^2 and E e^2, which
    also fixes the split between real and imaginary parts) of std * Vt(randn_like(x))."""
    svd = svd_of(op)
    n, sigma_y = 3000, 0.7
    x = _x(shape, seed=4)[:1]
    xs = x.expand(n, *shape[1:])
    y_clean = op.A(xs)
    g = seeded(5)
    if y_clean.is_complex():  # circular noise, E|n|^2 = sigma_y^2
        noise = torch.complex(torch.randn(y_clean.shape, generator=g, dtype=torch.float64),
                              torch.randn(y_clean.shape, generator=g, dtype=torch.float64)) * (sigma_y / math.sqrt(2))
    else:
        noise = sigma_y * torch.randn(y_clean.shape, generator=g, dtype=torch.float64)
    ybar, std = svd.measurement(y_clean + noise, sigma_y)
    c = svd.Vt(xs)
    err = (ybar - c)
    white = svd.Vt(torch.randn(xs.shape, generator=seeded(6), dtype=torch.float64))
    observed = svd.observed(c).expand(c.shape)[0]
    std = std.expand(c.shape)[0]
    second = err.abs().square().mean(0)[observed]
    expected = (std.square() * white.abs().square().mean(0))[observed]
    ratio = second / expected
    assert float((ratio - 1).abs().max()) < 0.25 and float((ratio.mean() - 1).abs()) < 0.05
    if err.is_complex():
        pseudo = (err.square().mean(0) / std.square())[observed]
        pseudo_white = white.square().mean(0)[observed]
        assert float((pseudo - pseudo_white).abs().max()) < 0.25
    # and the unobserved coordinates of white noise are standard: a white unknown's projection
    assert float(white.abs().square().mean()) == pytest.approx(
        float(torch.randn(xs.shape, generator=seeded(7)).square().mean()) * xs[0].numel() / c[0].numel(), rel=0.05
    )


def test_svd_keeps_hermitian_symmetry_for_real_images():
    """Per-coordinate real weights on Vt of real images give real images back (SR's complex basis)."""
    op = SuperResolution(2, "bicubic")
    svd = svd_of(op)
    x, z = _x((2, 1, 8, 8), 8), _x((2, 1, 8, 8), 9)
    cx, cz = svd.Vt(x), svd.Vt(z)
    s = svd.s_like(cx)
    mixed = torch.where(s > 0, 0.3 * cx + 2.0 * cz / torch.where(s > 0, s, 1.0), cx - 0.5 * cz)
    image = torch.fft.ifft2(
        torch.einsum("lai,mbk,...ilkm->...albm", *_bases(op, 8, 8), mixed.unflatten(-1, (2, 4)).unflatten(-3, (2, 4)))
        .flatten(-2).flatten(-3, -2), norm="ortho")
    assert float(image.imag.abs().max()) < 1e-12


def _bases(op, H, W):
    from invdiff.samplers.svd import _householder_bases

    like = torch.zeros((), dtype=torch.float64)
    return _householder_bases(op._spectrum(H, like), op.factor)[1], _householder_bases(op._spectrum(W, like), op.factor)[1]


def test_super_resolution_singular_values_are_the_gram_spectrum():
    op = SuperResolution(2, "gaussian", sigma=1.3)
    svd = svd_of(op)
    c = svd.Vt(_x((1, 1, 8, 12)))
    s = svd.s_like(c)
    gram = op._gram_spectrum(4, 6, c)
    torch.testing.assert_close(s[:4, :6].square(), gram, rtol=1e-10, atol=1e-12)
    assert bool((s[4:] == 0).all()) and bool((s[:, 6:] == 0).all())


def test_no_closed_form():
    maps = torch.randn(2, 4, 4, generator=seeded(0), dtype=torch.complex128)
    assert svd_of(MultiCoilMRI(maps, _mask((4, 4), 0)) @ RealToComplex()) is None
    assert svd_of(ParallelBeamCT((8, 8), 4)) is None
    assert svd_of(SingleCoilMRI(_mask((4, 4), 0))) is None  # a complex unknown: only inside RealToComplex
    assert svd_of(SingleCoilMRI(_mask((4, 4), 0)), real=False) is not None
    assert svd_of(Scaled(Matrix(torch.randn(2, 3, generator=seeded(1), dtype=torch.float64)), 1j)) is None


def test_noise_factor():
    assert svd_of(Inpainting(_mask((4, 4), 0))).noise_factor == 1.0
    assert svd_of(SingleCoilMRI(_mask((4, 4), 0)) @ RealToComplex()).noise_factor == pytest.approx(2**-0.5)
    assert svd_of(SingleCoilMRI(_mask((4, 4), 0)), real=False).noise_factor == 1.0
