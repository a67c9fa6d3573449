"""Hostile input to the operators: NaN, infinities, empty batches, bad buffers, half precision.

Each case is one bad input a careless or hostile user gives; each must end in an error that
names the argument (or, for half precision, in a correct result), never in a silent garbage
result.
"""

from __future__ import annotations

import math

import pytest
import torch

from operators import (
    CenterCrop,
    GaussianNoise,
    Identity,
    Inpainting,
    Matrix,
    MultiCoilMRI,
    Multiply,
    ParallelBeamCT,
    PhaseRetrieval,
    PoissonNoise,
    RealToComplex,
    SingleCoilMRI,
    SuperResolution,
    TransmissionCT,
    acceleration_of,
    acs_lines,
    conjugate_gradient,
    estimate_kspace_noise_std,
    fft2c,
    ifft2c,
)
from tests.operators.cases import LINEAR_CASES

pytestmark = pytest.mark.hostile

NAN, INF = float("nan"), float("inf")


def _spd(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(n, n, generator=g, dtype=torch.float64)
    return L @ L.T + n * torch.eye(n, dtype=torch.float64)


def _apply(M: torch.Tensor):
    return lambda v: v @ M.T


def _maps(coils: int = 3, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(coils, size, size, generator=g, dtype=torch.complex64)


# --- A. NaN is not convergence --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_cg_rejects_non_finite_right_hand_side(bad):
    b = torch.ones(2, 4, dtype=torch.float64)
    b[0, 1] = bad
    with pytest.raises(ValueError, match=r"b: contains 1 NaN or infinite values \(of 8\)"):
        conjugate_gradient(_apply(_spd()), b)


def test_cg_rejects_non_finite_start():
    b = torch.ones(2, 4, dtype=torch.float64)
    x0 = torch.zeros_like(b)
    x0[1, 3] = NAN
    with pytest.raises(ValueError, match=r"x0: contains 1 NaN"):
        conjugate_gradient(_apply(_spd()), b, x0)


def test_cg_rejects_an_operator_that_returns_nan():
    M = _spd()

    def A(v):
        out = v @ M.T
        return torch.cat((out[:1], out[1:] * NAN))

    with pytest.raises(FloatingPointError, match=r"conjugate_gradient: A returned NaN .* samples \[1\]"):
        conjugate_gradient(A, torch.ones(2, 4, dtype=torch.float64))


def test_cg_stops_and_flags_non_positive_curvature():
    """An indefinite map: the sample stops at its last finite iterate and is flagged."""
    b = torch.ones(2, 4, dtype=torch.float64)
    M = _spd()
    x, info = conjugate_gradient(lambda v: torch.cat((v[:1] @ M.T, -v[1:])), b, max_iter=20, tol=1e-10)
    assert info["breakdown"].tolist() == [False, True]
    assert torch.isfinite(x).all() and torch.equal(x[1], torch.zeros(4, dtype=torch.float64))
    assert info["iterations"][1] == 0 and info["residual"][1] == 1
    torch.testing.assert_close(x[0], torch.linalg.solve(M, b[0]))


@pytest.mark.parametrize("tol", [NAN, -1.0, INF])
def test_cg_rejects_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tol: expected a finite number >= 0"):
        conjugate_gradient(_apply(_spd()), torch.ones(2, 4, dtype=torch.float64), tol=tol)


@pytest.mark.parametrize("max_iter", [NAN, 2.5, -3])
def test_cg_rejects_bad_iteration_count(max_iter):
    with pytest.raises(ValueError, match="max_iter: expected a non-negative integer"):
        conjugate_gradient(_apply(_spd()), torch.ones(2, 4, dtype=torch.float64), max_iter=max_iter)


def _pinv_cases():
    """``(op, y)`` of each operator with a ``pinv`` of its own, and a CG-SENSE one (the default)."""
    mask = torch.ones(8, 8)
    mask[:, ::2] = 0
    mri = MultiCoilMRI(_maps(), mask)
    y_mri = torch.ones(1, 3, 8, 8, dtype=torch.complex64)
    return {
        "cg_sense": (mri @ RealToComplex(), y_mri),
        "multicoil": (mri, y_mri),
        "singlecoil": (SingleCoilMRI(mask), torch.ones(1, 1, 8, 8, dtype=torch.complex64)),
        "matrix": (Matrix(torch.randn(3, 5, dtype=torch.float64)), torch.ones(2, 3, dtype=torch.float64)),
        "identity": (Identity(), torch.ones(1, 1, 4, 4)),
        "multiply": (Multiply(torch.rand(4, 4) + 0.5), torch.ones(1, 1, 4, 4)),
        "real_to_complex": (RealToComplex(), torch.ones(1, 1, 4, 4, dtype=torch.complex64)),
        "center_crop": (CenterCrop((6, 6), (4, 4)), torch.ones(1, 1, 4, 4)),
        "inpainting": (Inpainting(mask), torch.ones(1, 1, 8, 8)),
        "superres": (SuperResolution(2), torch.ones(1, 1, 4, 4)),
    }


@pytest.mark.parametrize("name", sorted(_pinv_cases()))
@pytest.mark.parametrize("bad", [NAN, INF])
def test_pinv_rejects_non_finite_measurements(name, bad):
    op, y = _pinv_cases()[name]
    y = y.clone()
    y.view(-1)[-1] = bad
    with pytest.raises(ValueError, match=rf"y: contains 1 NaN or infinite values \(of {y.numel()}\)"):
        op.pinv(y)


def test_fbp_rejects_non_finite_sinogram():
    op = ParallelBeamCT((8, 8), 6)
    y = op.A(torch.ones(1, 1, 8, 8))
    y[0, 0, 2, 3] = NAN
    with pytest.raises(ValueError, match="sinogram: contains 1 NaN"):
        op.fbp(y)


# --- B. masks and coil maps with NaN or negative values -------------------------------------------


def _bad(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[t.numel() // 2] = value
    return t


MASK_BUILDERS = {
    "multicoil": lambda mask: MultiCoilMRI(_maps(), mask),
    "singlecoil": SingleCoilMRI,
    "inpainting": Inpainting,
    "acceleration_of": acceleration_of,
    "acs_lines": acs_lines,
}
"""Everything that takes a sampling mask from the user."""


@pytest.mark.parametrize("name", sorted(MASK_BUILDERS))
@pytest.mark.parametrize("bad", [NAN, INF])
def test_masks_reject_non_finite_values(name, bad):
    with pytest.raises(ValueError, match=r"mask: contains 1 NaN or infinite values \(of 64\)"):
        MASK_BUILDERS[name](_bad(torch.ones(8, 8), bad))


@pytest.mark.parametrize("name", sorted(MASK_BUILDERS))
def test_masks_reject_negative_values(name):
    message = r"mask: expected non-negative values .* 1 negative values \(the smallest -0.5\)"
    with pytest.raises(ValueError, match=message):
        MASK_BUILDERS[name](_bad(torch.ones(8, 8), -0.5))


def test_inpainting_mask_is_at_most_one():
    """A 0/255 mask read from an image would silently scale the measurement by 255."""
    with pytest.raises(ValueError, match=r"mask: expected values in \[0, 1\], got 64 above 1 .*divid"):
        Inpainting(torch.full((8, 8), 255.0))
    Inpainting(torch.full((8, 8), 0.5))


def test_mri_masks_keep_density_weights_above_one():
    """Weighted MRI masks (density weights, the tests' 1-2 row weights) stay allowed."""
    SingleCoilMRI(torch.full((8, 8), 1.5))
    MultiCoilMRI(_maps(), torch.full((8, 8), 2.0))


@pytest.mark.parametrize("bad", [NAN, INF])
def test_coil_maps_reject_non_finite_values(bad):
    maps = _maps()
    maps[1, 2, 3] = complex(0.0, bad)
    with pytest.raises(ValueError, match=r"coil_maps: contains 1 NaN or infinite values \(of 192\)"):
        MultiCoilMRI(maps, torch.ones(8, 8))


def test_buffers_of_generic_operators_reject_non_finite_values():
    with pytest.raises(ValueError, match="weights: contains 1 NaN"):
        Multiply(_bad(torch.ones(4, 4), NAN))
    with pytest.raises(ValueError, match="matrix: contains 1 NaN"):
        Matrix(_bad(torch.ones(3, 4), INF))


def test_physical_constants_must_be_finite():
    with pytest.raises(ValueError, match="sigma: expected a finite, non-negative standard deviation"):
        GaussianNoise(INF)
    with pytest.raises(ValueError, match="photons: expected a finite, positive photon count, got inf"):
        PoissonNoise(INF)
    with pytest.raises(ValueError, match=r"rcond: expected a relative threshold in \[0, 1\), got nan"):
        SuperResolution(2, rcond=NAN)
    with pytest.raises(ValueError, match="sigma: expected a finite, positive standard deviation, got inf"):
        SuperResolution(2, "gaussian", sigma=INF)
    with pytest.raises(ValueError, match="oversampling: expected a finite ratio >= 1, got inf"):
        PhaseRetrieval(INF)
    with pytest.raises(ValueError, match="I0: expected a finite, positive photon count, got inf"):
        TransmissionCT(ParallelBeamCT((8, 8), 4), I0=INF)


# --- C. empty batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LINEAR_CASES))
def test_empty_batch_is_a_clear_error_or_an_empty_result(name):
    """A ``(0, C, H, W)`` input used to reach MKL ("Inconsistent configuration parameters")."""
    op, x = LINEAR_CASES[name](torch.float32, torch.device("cpu"))
    y = op.A(x)
    for method, t in (("A", x[:0]), ("AT", y[:0]), ("normal", x[:0]), ("pinv", y[:0])):
        try:
            out = getattr(op, method)(t)
        except ValueError as err:
            assert "expected a non-empty tensor" in str(err), f"{method}: {err}"
        else:
            assert out.shape[0] == 0, f"{method}: {tuple(out.shape)}"


def test_multicoil_mri_names_zero_coils():
    with pytest.raises(ValueError, match=r"coil_maps: expected a non-empty tensor .* got shape \(0, 8, 8\)"):
        MultiCoilMRI(torch.zeros(0, 8, 8, dtype=torch.complex64), torch.ones(8, 8))


def test_cg_names_an_empty_batch():
    with pytest.raises(ValueError, match=r"b: expected a non-empty tensor .* got shape \(0, 4\)"):
        conjugate_gradient(_apply(_spd()), torch.zeros(0, 4, dtype=torch.float64))


# --- C. half precision on the CPU -----------------------------------------------------------------

HALF_TOLERANCE = {torch.float16: 3e-3, torch.bfloat16: 3e-2}


def _half(t: torch.Tensor, half: torch.dtype) -> torch.Tensor:
    """``t`` in ``half`` precision; complex tensors go to complex32, or stay complex64 for
    bfloat16 (torch has no complex bfloat16)."""
    if t.is_complex():
        return t.to(torch.complex32) if half == torch.float16 else t
    return t.to(half)


def _half_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.to(torch.complex128 if a.is_complex() else torch.float64)
    b = b.to(a.dtype)
    return float((a - b).abs().norm() / b.abs().norm())


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", sorted(LINEAR_CASES))
def test_operators_run_in_half_precision_on_the_cpu(name, half):
    """``torch.fft`` has no half-precision CPU kernels: FFT-based operators used to fail with an
    MKL error. Half-precision input now gives the float32 result to half-precision accuracy, in
    the input's precision."""
    op, x = LINEAR_CASES[name](torch.float32, torch.device("cpu"))
    if x.is_complex() and half == torch.bfloat16:
        pytest.skip("no complex bfloat16 input exists")
    y = op.A(x)
    for method, exact in (("A", x), ("AT", y), ("normal", x), ("pinv", y)):
        low = _half(exact, half)
        # A few CG iterations where pinv is iterative; CG amplifies the rounding of y.
        options, slack = ({"max_iter": 8}, 10) if method == "pinv" else ({}, 1)
        out = getattr(op, method)(low, **options)
        reference = getattr(op, method)(exact, **options)
        assert _half_rel(out, reference) < slack * HALF_TOLERANCE[half], method
        if low.dtype in (torch.float16, torch.bfloat16, torch.complex32):
            if out.is_complex():
                assert out.dtype == (torch.complex32 if half == torch.float16 else torch.complex64), method
            else:
                assert out.dtype == half, method


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_phase_retrieval_and_centred_ffts_in_half_precision(half):
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    op = PhaseRetrieval(2.0)
    out = op.A(x.to(half))
    assert out.dtype == half and _half_rel(out, op.A(x)) < HALF_TOLERANCE[half]
    k = fft2c(x.to(half))
    assert k.dtype == (torch.complex32 if half == torch.float16 else torch.complex64)
    assert _half_rel(ifft2c(k), x) < HALF_TOLERANCE[half]


def test_single_precision_path_leaves_float32_alone():
    """The float32 fast path is the unwrapped method: bit-identical results, no copies."""
    mask = torch.ones(8, 8)
    mask[:, ::3] = 0
    op = MultiCoilMRI(_maps(), mask)
    x = torch.randn(2, 1, 8, 8, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(op.A(x), MultiCoilMRI.A.__wrapped__(op, x))
    assert torch.equal(op.normal(x), MultiCoilMRI.normal.__wrapped__(op, x))


def test_kspace_noise_estimate_rejects_nan_samples():
    """A NaN in the outer readout rows used to make the estimated noise level NaN."""
    kspace = torch.randn(2, 16, 8, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    kspace[1, 0, 0] = complex(NAN, 0.0)
    message = r"kspace \(the 64 samples of the outer readout rows\): contains 1 NaN"
    with pytest.raises(ValueError, match=message):
        estimate_kspace_noise_std(kspace)
    mask = torch.ones(8)
    mask[0] = 0
    assert math.isfinite(estimate_kspace_noise_std(kspace, mask))
