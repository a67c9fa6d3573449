"""Batched conjugate gradient on SENSE and dense systems, against direct solves."""

import pytest
import torch

from operators.cg import conjugate_gradient
from operators.mri import MultiCoilMRI

H, W, COILS = 12, 10, 4


def _sense(generator: torch.Generator) -> MultiCoilMRI:
    """Unit-norm random coil maps and a mildly undersampled 2D mask (every other column dropped in part)."""
    maps = torch.randn(COILS, H, W, dtype=torch.complex128, generator=generator)
    maps = maps / maps.abs().square().sum(0).sqrt()
    mask = (torch.rand(H, W, generator=generator, dtype=torch.float64) > 0.3).double()
    return MultiCoilMRI(maps, mask)


def _regularised(op: MultiCoilMRI, gamma: torch.Tensor):
    """``x -> x + gamma_b A^H A x``, one ``gamma`` per sample: the conditioning differs across the batch."""
    return lambda x: x + gamma.view(-1, 1, 1, 1).to(x.real.dtype) * op.normal(x)


def _dense(A, shape, dtype) -> torch.Tensor:
    """The matrix of a samplewise linear map on one sample of ``shape``, by applying it to the basis."""
    n = int(torch.tensor(shape).prod())
    basis = torch.eye(n, dtype=dtype).reshape(n, *shape)
    return A(basis).reshape(n, n).T


def _true_residual(A, x, b) -> torch.Tensor:
    return (b - A(x)).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def test_complex_sense_matches_direct_solve(generator):
    op = _sense(generator)
    gamma = torch.tensor([0.1, 10.0], dtype=torch.float64)
    A = _regularised(op, gamma)
    b = torch.randn(2, 1, H, W, dtype=torch.complex128, generator=generator)
    x, info = conjugate_gradient(A, b, max_iter=200, tol=1e-10)
    assert (info["residual"] <= 1e-10).all()
    assert (_true_residual(A, x, b) <= 2e-10).all()
    for i in range(2):
        M = _dense(lambda u: u + gamma[i] * op.normal(u), (1, H, W), torch.complex128)
        direct = torch.linalg.solve(M, b[i].flatten())
        assert torch.linalg.norm(x[i].flatten() - direct) / torch.linalg.norm(direct) < 1e-9


def test_real_dense_matches_direct_solve(generator):
    n = 120
    Q, _ = torch.linalg.qr(torch.randn(3, n, n, dtype=torch.float64, generator=generator))
    spectra = torch.stack([torch.linspace(1, c, n, dtype=torch.float64) for c in (1.5, 20.0, 400.0)])
    M = Q @ torch.diag_embed(spectra) @ Q.transpose(1, 2)
    b = torch.randn(3, n, 1, dtype=torch.float64, generator=generator)
    x, info = conjugate_gradient(lambda u: M @ u, b, max_iter=500, tol=1e-11)
    direct = torch.linalg.solve(M, b)
    assert ((x - direct).flatten(1).norm(dim=1) / direct.flatten(1).norm(dim=1) < 1e-9).all()
    assert (_true_residual(lambda u: M @ u, x, b) < 2e-11).all()
    assert info["iterations"][0] < info["iterations"][1] < info["iterations"][2]


def test_batch_equals_one_by_one(generator):
    op = _sense(generator)
    gamma = torch.tensor([0.05, 2.0, 40.0], dtype=torch.float64)
    b = torch.randn(3, 1, H, W, dtype=torch.complex128, generator=generator)
    x, info = conjugate_gradient(_regularised(op, gamma), b, max_iter=300, tol=1e-8)
    assert len(set(info["iterations"].tolist())) == 3, "samples converge at different iteration counts"
    for i in range(3):
        A_i = _regularised(op, gamma[i : i + 1])
        xi, info_i = conjugate_gradient(A_i, b[i : i + 1], max_iter=300, tol=1e-8)
        assert info_i["iterations"].item() == info["iterations"][i].item()
        assert torch.linalg.norm(x[i] - xi[0]) / torch.linalg.norm(xi[0]) < 1e-12
        assert info_i["residual"].item() == pytest.approx(info["residual"][i].item(), rel=1e-9)


def test_early_stopping_on_tolerance_and_max_iter(generator):
    op = _sense(generator)
    A = _regularised(op, torch.tensor([5.0, 5.0], dtype=torch.float64))
    b = torch.randn(2, 1, H, W, dtype=torch.complex128, generator=generator)
    loose, info_loose = conjugate_gradient(A, b, max_iter=200, tol=1e-3)
    tight, info_tight = conjugate_gradient(A, b, max_iter=200, tol=1e-10)
    assert (info_loose["residual"] <= 1e-3).all()
    assert (info_loose["iterations"] < info_tight["iterations"]).all()
    assert (_true_residual(A, loose, b) <= 2e-3).all()
    capped, info_capped = conjugate_gradient(A, b, max_iter=2, tol=1e-10)
    assert info_capped["iterations"].tolist() == [2, 2] and (info_capped["residual"] > 1e-10).all()
    _, info_none = conjugate_gradient(A, b, max_iter=0)
    assert info_none["iterations"].tolist() == [0, 0]
    assert torch.allclose(info_none["residual"], torch.ones(2, dtype=torch.float64))


def test_warm_start(generator):
    op = _sense(generator)
    A = _regularised(op, torch.tensor([1.0, 20.0], dtype=torch.float64))
    b = torch.randn(2, 1, H, W, dtype=torch.complex128, generator=generator)
    cold, info_cold = conjugate_gradient(A, b, max_iter=300, tol=1e-9)
    near = cold + 1e-4 * torch.randn(cold.shape, dtype=cold.dtype, generator=generator)
    warm, info_warm = conjugate_gradient(A, b, near, max_iter=300, tol=1e-9)
    assert (info_warm["iterations"] < info_cold["iterations"]).all()
    assert (_true_residual(A, warm, b) <= 2e-9).all()
    exact, info_exact = conjugate_gradient(A, A(cold), cold, tol=1e-9)
    assert info_exact["iterations"].tolist() == [0, 0] and torch.equal(exact, cold)


def test_zero_right_hand_side(generator):
    op = _sense(generator)
    A = _regularised(op, torch.tensor([1.0, 1.0], dtype=torch.float64))
    b = torch.randn(2, 1, H, W, dtype=torch.complex128, generator=generator)
    b[0] = 0
    x, info = conjugate_gradient(A, b, max_iter=100, tol=1e-10)
    assert torch.equal(x[0], torch.zeros_like(x[0]))
    assert info["iterations"][0] == 0 and info["residual"][0] == 0
    assert info["iterations"][1] > 0 and _true_residual(A, x, b)[1] <= 2e-10
    zero, info_zero = conjugate_gradient(A, torch.zeros_like(b))
    assert torch.equal(zero, torch.zeros_like(b)) and info_zero["iterations"].tolist() == [0, 0]


def test_float32_complex64(generator):
    op = _sense(generator)
    A = _regularised(op, torch.tensor([0.5, 5.0], dtype=torch.float64))
    b = torch.randn(2, 1, H, W, dtype=torch.complex64, generator=generator)
    x, info = conjugate_gradient(A, b, max_iter=100, tol=1e-5)
    assert x.dtype == torch.complex64 and (info["residual"] <= 1e-5).all()
    assert (_true_residual(A, x, b) <= 1e-4).all()


@pytest.mark.parametrize("check_every", [0, 3, 10])
def test_sparse_convergence_tests_give_the_same_result(generator, check_every):
    """Testing for convergence less often (one host synchronisation per test) only adds idle
    iterations: a converged sample (the zero right-hand side, the loose one) and a sample stopped by
    non-positive curvature take zero steps, so every output is bit for bit the same."""
    op = _sense(generator)
    A = _regularised(op, torch.tensor([1.0, 20.0, 1.0], dtype=torch.float64))
    b = torch.randn(3, 1, H, W, dtype=torch.complex128, generator=generator)
    b[0] = 0

    def indefinite(v):
        return torch.cat((A(v)[:2], -v[2:]))

    for system in (A, indefinite):
        x, info = conjugate_gradient(system, b, max_iter=25, tol=1e-4)
        x_sparse, info_sparse = conjugate_gradient(system, b, max_iter=25, tol=1e-4, check_every=check_every)
        assert torch.equal(x, x_sparse)
        for key in info:
            assert torch.equal(info[key], info_sparse[key]), key


def test_unchecked_run_leaves_non_finite_values_to_the_caller():
    """``check_finite=False``: no finiteness test (no synchronisation); NaN comes out in ``residual``."""
    b = torch.ones(2, 3, dtype=torch.float64)
    b[1, 0] = float("nan")
    x, info = conjugate_gradient(lambda u: 2 * u, b, max_iter=5, check_finite=False)
    torch.testing.assert_close(x[0], b[0] / 2)
    assert torch.isnan(info["residual"][1]) and not torch.isnan(info["residual"][0])


def test_errors():
    b = torch.ones(2, 3)
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda u: u, b, max_iter=-1)
    with pytest.raises(ValueError, match="check_every"):
        conjugate_gradient(lambda u: u, b, check_every=-1)
    with pytest.raises(ValueError, match="x0"):
        conjugate_gradient(lambda u: u, b, torch.ones(2, 4))
