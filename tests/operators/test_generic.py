"""Tests every linear operator gets: adjointness, linearity, normal, composition, sums."""

import pytest
import torch

from operators.base import LinearOperator, Multiply, adjointness_error
from tests.operators.cases import LINEAR_CASES

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


def _randn_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(t.shape, dtype=t.dtype, device=t.device, generator=generator)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().norm() / b.abs().norm())


@pytest.fixture(params=sorted(LINEAR_CASES), scope="module")
def name(request):
    return request.param


@pytest.mark.hostile
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adjoint(name, dtype, generator):
    op, x = LINEAR_CASES[name](dtype, torch.device("cpu"))
    assert x.shape[0] > 1, "cases use a batch of more than one sample"
    assert isinstance(op, LinearOperator)
    assert adjointness_error(op, x, generator=generator) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adjoint_of_adjoint(name, dtype, generator):
    op, x = LINEAR_CASES[name](dtype, torch.device("cpu"))
    y = op.A(x)
    assert adjointness_error(op.adjoint, y, generator=generator) < TOLERANCE[dtype]


def test_linearity(name, generator):
    op, x = LINEAR_CASES[name](torch.float64, torch.device("cpu"))
    u, v = _randn_like(x, generator), _randn_like(x, generator)
    a, b = 0.7, -1.3
    assert _rel(op.A(a * u + b * v), a * op.A(u) + b * op.A(v)) < 1e-10
    y = op.A(x)
    s, t = _randn_like(y, generator), _randn_like(y, generator)
    assert _rel(op.AT(a * s + b * t), a * op.AT(s) + b * op.AT(t)) < 1e-10


def test_batch_is_samplewise(name, generator):
    """Each sample's output depends on that sample alone: changing the others leaves it as is."""
    op, x = LINEAR_CASES[name](torch.float64, torch.device("cpu"))
    u = _randn_like(x, generator)
    changed = torch.cat([u[:1], _randn_like(u[1:], generator)])
    assert torch.equal(op.A(u)[:1], op.A(changed)[:1])
    y = op.A(u)
    v = _randn_like(y, generator)
    changed = torch.cat([v[:1], _randn_like(v[1:], generator)])
    assert torch.equal(op.AT(v)[:1], op.AT(changed)[:1])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_normal(name, dtype, generator):
    op, x = LINEAR_CASES[name](dtype, torch.device("cpu"))
    u = _randn_like(x, generator)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert _rel(op.normal(u), op.AT(op.A(u))) < tol


def test_output_dtype_follows_input(name):
    for dtype in DTYPES:
        op, x = LINEAR_CASES[name](dtype, torch.device("cpu"))
        y = op.A(x)
        assert y.dtype in (dtype, {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype])
        assert op.AT(y).dtype == x.dtype


def test_composition_adjoint(name, generator):
    """Pre- and post-multiplying by complex weights: the adjoint of a composition reverses it."""
    op, x = LINEAR_CASES[name](torch.float64, torch.device("cpu"))
    y = op.A(x)
    w_out = _randn_like(y, generator)
    w_in = _randn_like(x, generator)
    composed = Multiply(w_out) @ op @ Multiply(w_in)
    assert adjointness_error(composed, x, generator=generator) < 1e-10
    u = _randn_like(x, generator)
    assert _rel(composed.normal(u), composed.AT(composed.A(u))) < 1e-12
    assert _rel(composed.A(u), w_out * op.A(w_in * u)) < 1e-12


def test_sum_and_scale(name, generator):
    op, x = LINEAR_CASES[name](torch.float64, torch.device("cpu"))
    y = op.A(x)
    c = 2.0 if not y.is_complex() else 2.0 - 0.5j
    combo = c * op + op - 0.5 * op
    assert adjointness_error(combo, x, generator=generator) < 1e-10
    u = _randn_like(x, generator)
    assert _rel(combo.A(u), (c + 0.5) * op.A(u)) < 1e-12


def test_to_moves_buffers(name):
    op, x = LINEAR_CASES[name](torch.float32, torch.device("cpu"))
    op64 = op.to(dtype=torch.float64)
    x64 = x.to(torch.complex128 if x.is_complex() else torch.float64)
    assert _rel(op64.A(x64), op.A(x64)) < 1e-12


@pytest.mark.gpu
def test_cuda_matches_cpu(name):
    op, x = LINEAR_CASES[name](torch.float64, torch.device("cpu"))
    cuda = torch.device("cuda")
    y = op.A(x)
    torch.testing.assert_close(op.A(x.to(cuda)).cpu(), y)
    torch.testing.assert_close(op.to(cuda).AT(y.to(cuda)).cpu(), op.AT(y))


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar", "per_sample"])
def test_solve_normal(name, per_sample, generator):
    r"""``solve_normal`` solves :math:`(A^H A + \lambda I) x = b`; a closed form agrees with
    conjugate gradient (the base class's method)."""
    op, x = LINEAR_CASES[name](torch.float64, torch.device("cpu"))
    b = _randn_like(x, generator)
    lam = torch.linspace(0.2, 2.0, x.shape[0], dtype=torch.float64) if per_sample else 0.7
    shift = lam.reshape(-1, *([1] * (x.ndim - 1))) if per_sample else lam
    solution = op.solve_normal(b, lam, max_iter=500, tol=1e-13)
    assert solution.shape == b.shape and solution.dtype == b.dtype
    assert _rel(op.normal(solution) + shift * solution, b) < 1e-9
    if op.has_closed_form_solve:
        reference = LinearOperator.solve_normal(op, b, lam, max_iter=500, tol=1e-13)
        assert _rel(solution, reference) < 1e-9


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf"), "1", torch.ones(7)], ids=str)
def test_solve_normal_rejects_bad_lam(name, lam):
    op, x = LINEAR_CASES[name](torch.float64, torch.device("cpu"))
    with pytest.raises(ValueError, match="lam"):
        op.solve_normal(torch.ones_like(x), lam)
