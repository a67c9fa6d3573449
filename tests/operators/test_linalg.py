"""Power iteration against dense eigenvalues; finite differences against their matrices and the
official ``_Dz``/``_DzT`` of DiffusionMBIR and DDS."""

import pytest
import torch

from operators import FiniteDifference, ParallelBeamCT, power_iteration, sparse_view_angles


def _dense(fn, shape):
    n = torch.Size(shape).numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return torch.stack([fn(e).reshape(-1) for e in basis], 1)


def _official_dz(x):
    y = torch.zeros_like(x)
    y[:-1] = x[1:]
    y[-1] = x[0]
    return y - x


def _official_dzt(x):
    y = torch.zeros_like(x)
    y[:-1] = x[1:]
    y[-1] = x[0]
    tempt = -(y - x)
    difft = tempt[:-1]
    y[1:] = difft
    y[0] = x[-1] - x[0]
    return y


def test_finite_difference_matrices():
    plain = _dense(FiniteDifference(0).A, (4, 1))
    expected = torch.tensor([[-1.0, 1, 0, 0], [0, -1, 1, 0], [0, 0, -1, 1]], dtype=torch.float64)
    torch.testing.assert_close(plain, expected)
    circular = _dense(FiniteDifference(0, circular=True).A, (4, 1))
    torch.testing.assert_close(circular, torch.cat([expected, torch.tensor([[1.0, 0, 0, -1]], dtype=torch.float64)]))


def test_circular_dz_is_the_official_one(generator):
    x = torch.randn(6, 1, 3, 4, generator=generator)
    dz = FiniteDifference(0, circular=True)
    assert torch.equal(dz.A(x), _official_dz(x))
    assert torch.equal(dz.AT(x), _official_dzt(x))


def test_finite_difference_guards():
    with pytest.raises(ValueError, match="dim=4"):
        FiniteDifference(4).A(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="dim"):
        FiniteDifference(1.5)


def test_power_iteration_matches_the_largest_eigenvalue():
    op = ParallelBeamCT((6, 6), sparse_view_angles(3))
    top = torch.linalg.eigvalsh(_dense(op.normal, (1, 1, 6, 6)))[-1]
    like = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    assert float(power_iteration(op.normal, like, iterations=60)) == pytest.approx(float(top), rel=1e-3)
    assert torch.equal(power_iteration(op.normal, like), power_iteration(op.normal, like))


def test_power_iteration_per_sample(generator):
    """Each sample's estimate is its own largest eigenvalue, whatever the rest of the batch."""
    scales = torch.tensor([1.0, 4.0, 0.0], dtype=torch.float64)
    dz = FiniteDifference(-1, circular=True)
    normal = lambda v: scales[: v.shape[0]].view(-1, 1, 1) * dz.normal(v)  # noqa: E731
    values = power_iteration(normal, torch.zeros(3, 1, 8, dtype=torch.float64), iterations=300, per_sample=True)
    # The circular difference on 8 points has eigenvalues 2 - 2 cos(2 pi k / 8), at most 4.
    torch.testing.assert_close(values, 4.0 * scales, rtol=1e-3, atol=0)
    first = power_iteration(normal, torch.zeros(1, 1, 8, dtype=torch.float64), iterations=300, per_sample=True)
    torch.testing.assert_close(first, values[:1], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="iterations"):
        power_iteration(normal, torch.zeros(3, 1, 8), iterations=0)
