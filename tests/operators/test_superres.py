import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F

from operators.base import adjointness_error
from operators.superres import SuperResolution, downsampling_kernel


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_box_is_block_average_and_pinv_is_replication(factor, generator):
    x = torch.randn(2, 3, 5 * factor, 7 * factor, generator=generator, dtype=torch.float64)
    op = SuperResolution(factor, "box")
    y = op.A(x)
    torch.testing.assert_close(y, F.avg_pool2d(x, factor))
    replicated = y.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    torch.testing.assert_close(op.pinv(y), replicated)


@pytest.mark.parametrize("kernel", ["box", "bicubic", "gaussian"])
def test_pinv_is_a_right_inverse_and_minimum_norm(kernel, generator):
    op = SuperResolution(2, kernel)
    y = torch.randn(2, 1, 8, 6, generator=generator, dtype=torch.float64)
    x = op.pinv(y)
    if kernel != "gaussian":  # the Gaussian's spectrum is too small at high frequencies to invert
        torch.testing.assert_close(op.A(x), y)
    # Minimum norm: x lies in the range of A^T, so it matches the CG least-squares solution.
    x_cg = super(SuperResolution, op).pinv(y, tol=1e-12, max_iter=500)
    torch.testing.assert_close(x, x_cg, rtol=1e-5, atol=1e-6)


def test_constant_image_is_preserved():
    for kernel in ("box", "bicubic", "gaussian"):
        for factor in (2, 3):
            x = torch.full((1, 1, 6 * factor, 4 * factor), 2.5, dtype=torch.float64)
            torch.testing.assert_close(SuperResolution(factor, kernel).A(x), torch.full((1, 1, 6, 4), 2.5, dtype=torch.float64))


def test_kernels_are_centred_on_blocks():
    for kernel in ("box", "bicubic", "gaussian"):
        for factor in (2, 3, 4):
            taps, first = downsampling_kernel(factor, kernel)
            positions = torch.arange(len(taps), dtype=torch.float64) + first
            centre = float((taps * positions).sum())
            assert abs(centre - (factor - 1) / 2) < 1e-12
            assert abs(float(taps.sum()) - 1) < 1e-12


def test_bicubic_matches_the_reference_antialias_weights():
    """Factor 2: Keys' cubic at half-integer offsets stretched by 2 (MATLAB imresize's antialias taps)."""
    taps, first = downsampling_kernel(2, "bicubic")
    expected = torch.tensor([-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375])
    torch.testing.assert_close(taps, expected.double() / expected.sum().double())
    assert first == -3


def test_real_input_gives_real_output(generator):
    x = torch.randn(1, 2, 12, 9, generator=generator)
    y = SuperResolution(3).A(x)
    assert y.dtype == torch.float32 and y.shape == (1, 2, 4, 3)
    assert SuperResolution(3).AT(y).shape == x.shape


def test_bad_input():
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(2.5)
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(0)
    with pytest.raises(ValueError, match="kernel"):
        SuperResolution(2, "lanczos")
    with pytest.raises(ValueError, match="x: expected H and W to be multiples of factor=3"):
        SuperResolution(3).A(torch.zeros(1, 1, 10, 9))
    with pytest.raises(ValueError, match="x: expected 4 dimensions"):
        SuperResolution(2).A(torch.zeros(4, 4))


@settings(max_examples=25, deadline=None)
@given(
    factor=st.integers(1, 4),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    kernel=st.sampled_from(["box", "bicubic", "gaussian"]),
    complex_=st.booleans(),
)
def test_adjoint_on_arbitrary_sizes(factor, h, w, kernel, complex_):
    dtype = torch.complex128 if complex_ else torch.float64
    x = torch.zeros(2, 1, h * factor, w * factor, dtype=dtype)
    g = torch.Generator().manual_seed(factor * 100 + h * 10 + w)
    assert adjointness_error(SuperResolution(factor, kernel), x, generator=g) < 1e-10
