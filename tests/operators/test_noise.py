import pytest
import torch

from operators.noise import GaussianNoise, PoissonNoise


def test_gaussian_is_seeded_and_has_the_right_variance():
    z = torch.zeros(200_000, dtype=torch.float64)
    a = GaussianNoise(0.3)(z, generator=torch.Generator().manual_seed(5))
    b = GaussianNoise(0.3)(z, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert abs(float(a.std()) - 0.3) < 0.003
    zc = torch.zeros(200_000, dtype=torch.complex128)
    n = GaussianNoise(0.3)(zc, generator=torch.Generator().manual_seed(5))
    assert abs(float(n.abs().square().mean()) - 0.09) < 0.002
    assert abs(float(n.real.var()) - 0.045) < 0.002


def test_poisson_mean_and_variance():
    z = torch.full((200_000,), 0.5, dtype=torch.float64)
    y = PoissonNoise(100.0)(z, generator=torch.Generator().manual_seed(1))
    assert abs(float(y.mean()) - 0.5) < 0.002
    assert abs(float(y.var()) - 0.5 / 100) < 3e-4
    counts = PoissonNoise(100.0, normalize=False)(z, generator=torch.Generator().manual_seed(1))
    assert torch.equal(counts, torch.round(counts))


def test_bad_parameters():
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(-1.0)
    with pytest.raises(ValueError, match="photons"):
        PoissonNoise(0.0)
    with pytest.raises(ValueError, match="z: Poisson noise needs non-negative"):
        PoissonNoise(10.0)(torch.tensor([-1.0]), generator=None)
