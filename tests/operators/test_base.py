import pytest
import torch

from operators.base import (
    Identity,
    LinearOperator,
    Multiply,
    Matrix,
    Operator,
    RealToComplex,
    adjointness_error,
    as_linear_operator,
    cast_like,
    check_tensor,
)
from operators.nonlinear import PhaseRetrieval


class _Square(Operator):
    def A(self, x):
        return x.square()


def test_composition_applies_right_to_left(generator):
    w = torch.randn(1, 1, 4, 5, generator=generator, dtype=torch.float64)
    x = torch.randn(2, 1, 4, 5, generator=generator, dtype=torch.float64)
    composed = _Square() @ Multiply(w)
    assert not isinstance(composed, LinearOperator)
    torch.testing.assert_close(composed(x), (w * x).square())
    # Nested compositions flatten.
    assert len((composed @ Identity()).ops) == 3


def test_linear_composition_is_linear_and_reverses_adjoint(generator):
    a = torch.randn(1, 1, 4, 5, generator=generator, dtype=torch.complex128)
    b = torch.randn(1, 1, 4, 5, generator=generator, dtype=torch.complex128)
    op = Multiply(a) @ Multiply(b)
    assert isinstance(op, LinearOperator)
    y = torch.randn(3, 1, 4, 5, generator=generator, dtype=torch.complex128)
    torch.testing.assert_close(op.AT(y), b.conj() * (a.conj() * y))


def test_real_to_complex_layout():
    x = torch.arange(2 * 4 * 3 * 2, dtype=torch.float64).reshape(2, 4, 3, 2)
    z = RealToComplex().A(x)
    assert z.shape == (2, 2, 3, 2)
    torch.testing.assert_close(z[:, 1].real, x[:, 2])
    torch.testing.assert_close(z[:, 1].imag, x[:, 3])
    torch.testing.assert_close(RealToComplex().AT(z), x)


def test_adjointness_error_detects_a_wrong_adjoint(generator):
    w = torch.randn(1, 1, 6, 5, generator=generator, dtype=torch.complex128)
    wrong = as_linear_operator(lambda x: w * x, lambda y: w * y)  # missing conjugate
    x = torch.randn(2, 1, 6, 5, generator=generator, dtype=torch.complex128)
    assert adjointness_error(wrong, x, generator=generator) > 1e-3
    right = as_linear_operator(lambda x: w * x, lambda y: w.conj() * y)
    assert adjointness_error(right, x, generator=generator) < 1e-12


def test_default_pinv_is_least_squares(generator):
    w = torch.rand(1, 1, 5, 4, generator=generator, dtype=torch.float64) + 0.5
    op = as_linear_operator(lambda x: w * x, lambda y: w * y)
    y = torch.randn(2, 1, 5, 4, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(op.pinv(y, tol=1e-12), y / w)


def test_cast_like_keeps_kind():
    like = torch.zeros(2, dtype=torch.complex128)
    assert cast_like(torch.zeros(2), like).dtype == torch.float64
    assert cast_like(torch.zeros(2, dtype=torch.complex64), like).dtype == torch.complex128
    assert cast_like(torch.zeros(2, dtype=torch.complex64), torch.zeros(2)).dtype == torch.complex64
    assert cast_like(torch.zeros(2, dtype=torch.long), like).dtype == torch.long


def test_to_moves_nested_operators():
    op = Multiply(torch.ones(1, 1, 2, 2)) @ Multiply(torch.ones(1, 1, 2, 2, dtype=torch.complex64))
    moved = op.to(dtype=torch.float64)
    assert moved.ops[0].weights.dtype == torch.float64
    assert moved.ops[1].weights.dtype == torch.complex128
    assert op.ops[0].weights.dtype == torch.float32  # the original is untouched


def test_check_tensor_messages():
    with pytest.raises(ValueError, match="x: expected 4 dimensions"):
        check_tensor(torch.zeros(2, 3), "x", ndim=4)
    with pytest.raises(ValueError, match=r"y: expected shape \(\.\.\., \*, 5\)"):
        check_tensor(torch.zeros(2, 3, 4), "y", shape=(None, 5))
    with pytest.raises(ValueError, match="x: expected a complex tensor"):
        check_tensor(torch.zeros(2), "x", complex_=True)
    with pytest.raises(ValueError, match="x: expected a torch.Tensor"):
        check_tensor([1.0], "x")


def test_real_to_complex_rejects_bad_input():
    with pytest.raises(ValueError, match="even number of channels"):
        RealToComplex().A(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="x: expected a real"):
        RealToComplex().A(torch.zeros(1, 2, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="y: expected a complex"):
        RealToComplex().AT(torch.zeros(1, 1, 4, 4))


def test_matmul_with_non_operator_is_a_type_error():
    with pytest.raises(TypeError):
        PhaseRetrieval() @ torch.zeros(2)


@pytest.mark.parametrize("m, n", [(3, 7), (7, 3)], ids=["wide", "tall"])
@pytest.mark.parametrize("kind", ["real", "complex", "complex_matrix_real_x"])
def test_matrix_and_scaled_solve_normal_against_dense(m, n, kind, generator):
    r"""``Matrix.solve_normal`` (direct or Woodbury) and ``Scaled``'s against a dense solve of
    :math:`(\operatorname{Re}?(M^H M) + \lambda I) x = b`."""
    complex_matrix = kind != "real"
    dtype = torch.complex128 if complex_matrix else torch.float64
    M = torch.randn(m, n, dtype=dtype, generator=generator)
    x_dtype = torch.complex128 if kind == "complex" else torch.float64
    b = torch.randn(2, n, dtype=x_dtype, generator=generator)
    gram = M.mH @ M
    gram = gram.real if kind == "complex_matrix_real_x" else gram
    for op, scale in ((Matrix(M), 1.0), (2.0 * Matrix(M), 4.0)):
        assert op.has_closed_form_solve
        expected = torch.linalg.solve(scale * gram + 0.3 * torch.eye(n, dtype=gram.dtype), b.T).T
        assert torch.allclose(op.solve_normal(b, 0.3), expected, atol=1e-10)
