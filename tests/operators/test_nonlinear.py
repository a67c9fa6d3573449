import numpy as np
import pytest
import torch

from operators.base import Multiply, as_linear_operator
from operators.nonlinear import PhaseRetrieval, TransmissionCT
from operators.noise import PoissonNoise


def test_phase_retrieval_matches_numpy(generator):
    x = torch.randn(2, 1, 7, 10, generator=generator, dtype=torch.complex128)
    op = PhaseRetrieval(2.0)
    y = op.A(x)
    assert y.shape == (2, 1, 14, 20)
    padded = np.zeros((2, 1, 14, 20), dtype=complex)
    padded[..., 3:10, 5:15] = x.numpy()
    expected = np.abs(np.fft.fft2(padded, norm="ortho"))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    # Parseval: magnitudes carry the image's energy; intensities are their squares.
    torch.testing.assert_close(y.square().sum((-2, -1)), x.abs().square().sum((-2, -1)))
    torch.testing.assert_close(PhaseRetrieval(2.0, intensity=True).A(x), y.square())


def test_phase_retrieval_trivial_ambiguities(generator):
    x = torch.randn(1, 1, 8, 8, generator=generator, dtype=torch.float64)
    op = PhaseRetrieval(2.0)
    torch.testing.assert_close(op.A(-x), op.A(x))
    torch.testing.assert_close(op.A(torch.flip(x, (-2, -1))), op.A(x))


@pytest.mark.parametrize("intensity", [False, True])
def test_phase_retrieval_gradcheck(intensity, generator):
    x = torch.randn(2, 1, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PhaseRetrieval(1.5, intensity=intensity).A, (x,))
    z = torch.randn(1, 1, 3, 3, generator=generator, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(PhaseRetrieval(2.0, intensity=intensity).A, (z,))


def _projector(generator):
    P = torch.rand(6, 12, generator=generator, dtype=torch.float64)
    return as_linear_operator(
        lambda x: (x.flatten(1) @ P.T).view(x.shape[0], 1, 1, 6),
        lambda y: (y.flatten(1) @ P).view(y.shape[0], 1, 3, 4),
    )


def test_transmission_ct_beer_lambert_and_postlog(generator):
    op = TransmissionCT(_projector(generator), I0=1e5)
    x = 0.1 * torch.rand(3, 1, 3, 4, generator=generator, dtype=torch.float64)
    line_integrals = op.projector.A(x)
    counts = op.A(x)
    torch.testing.assert_close(counts, 1e5 * torch.exp(-line_integrals))
    torch.testing.assert_close(op.postlog(counts), line_integrals)
    noisy = PoissonNoise(1.0, normalize=False)(counts, generator=generator)
    assert float((op.postlog(noisy) - line_integrals).abs().max()) < 0.1


def test_transmission_ct_gradcheck(generator):
    op = TransmissionCT(_projector(generator), I0=10.0)
    x = torch.rand(2, 1, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A, (x,))


def test_bad_input():
    with pytest.raises(ValueError, match="oversampling"):
        PhaseRetrieval(0.5)
    with pytest.raises(ValueError, match="x: expected 4 dimensions"):
        PhaseRetrieval().A(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="projector"):
        TransmissionCT(PhaseRetrieval())
    with pytest.raises(ValueError, match="I0"):
        TransmissionCT(Multiply(torch.ones(1)), I0=0)
