"""Classical baselines against dense linear algebra."""

from __future__ import annotations

import pytest
import torch

from invdiff.samplers import BASELINES, adjoint_baseline, fbp_baseline, least_squares
from operators.base import Matrix, Multiply
from operators.ct import ParallelBeamCT
from operators.nonlinear import PhaseRetrieval
from tests.samplers import seeded
from tests.samplers import single_thread  # noqa: F401  (autouse fixture)


def _matrix(m: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(m, n, generator=seeded(seed), dtype=torch.float64)


def test_adjoint_is_AT():
    M = _matrix(3, 5)
    op = Matrix(M, (1, 5))
    y = _matrix(4, 3, seed=1)
    x, info = adjoint_baseline(op, y, noise_std=0.1, generator=None)
    torch.testing.assert_close(x, op.AT(y))
    assert info["nfe"] == 0 and x.shape == (4, 1, 5)


def test_least_squares_overdetermined_matches_lstsq():
    M = _matrix(8, 5)
    y = _matrix(3, 8, seed=1)
    x, info = least_squares(Matrix(M), y, max_iter=30, tol=1e-12)
    expected = torch.linalg.lstsq(M, y.T).solution.T
    torch.testing.assert_close(x, expected, rtol=1e-8, atol=1e-10)
    assert info["iterations"].shape == (3,) and float(info["residual"].max()) < 1e-10


def test_least_squares_underdetermined_is_minimum_norm():
    M = _matrix(3, 7)
    y = _matrix(2, 3, seed=1)
    x, _ = least_squares(Matrix(M), y, max_iter=30, tol=1e-12)
    torch.testing.assert_close(x, y @ torch.linalg.pinv(M).T, rtol=1e-8, atol=1e-10)


def test_least_squares_damped_is_tikhonov():
    M = _matrix(4, 6)
    y = _matrix(2, 4, seed=1)
    lam = 0.3
    x, _ = least_squares(Matrix(M), y, max_iter=50, tol=1e-12, damping=lam)
    expected = torch.linalg.solve(M.T @ M + lam * torch.eye(6, dtype=torch.float64), M.T @ y.T).T
    torch.testing.assert_close(x, expected, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="damping"):
        least_squares(Matrix(M), y, damping=-1.0)


def test_fbp_calls_the_operator():
    op = ParallelBeamCT((16, 16), 24)
    x = torch.rand(2, 1, 16, 16, generator=seeded(0), dtype=torch.float64)
    y = op.A(x)
    out, info = fbp_baseline(op, y, filter="hann")
    torch.testing.assert_close(out, op.fbp(y, "hann"))
    assert info["nfe"] == 0


def test_fbp_needs_a_ct_operator():
    op = ParallelBeamCT((8, 8), 6) @ Multiply(torch.ones(8, 8))
    with pytest.raises(ValueError, match="fbp_baseline.*no fbp.*least_squares"):
        fbp_baseline(op, torch.zeros(1, 1, 6, op.ops[0].n_detectors))
    with pytest.raises(ValueError, match="no fbp"):
        fbp_baseline(Matrix(_matrix(2, 3)), torch.zeros(1, 2))


def test_baselines_need_linear_operators():
    with pytest.raises(ValueError, match="LinearOperator"):
        least_squares(PhaseRetrieval(), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="LinearOperator"):
        BASELINES["adjoint"](PhaseRetrieval(), torch.zeros(1, 1, 4, 4))


def test_pinv_is_the_operators_pinv():
    M = _matrix(3, 7)
    y = _matrix(2, 3, seed=1)
    x, info = BASELINES["pinv"](Matrix(M), y, max_iter=50, tol=1e-12)
    torch.testing.assert_close(x, y @ torch.linalg.pinv(M).T, rtol=1e-8, atol=1e-10)
    assert info["nfe"] == 0


@pytest.mark.parametrize(
    "op", [PhaseRetrieval(2.0), PhaseRetrieval(2.0, intensity=True), PhaseRetrieval(1.5)]
)
def test_error_reduction_fits_the_magnitudes(op):
    """Fienup's error reduction never increases its error; observed relative misfit 0.2-0.4
    after one iteration, 0.01-0.07 after 200 (it stagnates, as it is known to)."""
    x = torch.rand(3, 1, 12, 12, generator=seeded(0), dtype=torch.float64)
    y = op.A(x)
    misfits = [BASELINES["error_reduction"](op, y, iterations=n)[1]["residual"] for n in (1, 10, 200)]
    x_hat, _ = BASELINES["error_reduction"](op, y, iterations=200)
    assert x_hat.shape == x.shape and bool((x_hat >= 0).all())
    assert bool((misfits[1] <= misfits[0]).all() and (misfits[2] <= misfits[1]).all())
    assert float(misfits[2].max()) < 0.1
    again, _ = BASELINES["error_reduction"](op, y, iterations=200)
    assert torch.equal(x_hat, again)


def test_error_reduction_needs_phase_retrieval():
    with pytest.raises(ValueError, match="PhaseRetrieval"):
        BASELINES["error_reduction"](Matrix(_matrix(2, 3)), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="oversampled grid"):
        BASELINES["error_reduction"](PhaseRetrieval(2.0), torch.zeros(1, 1, 7, 7))
