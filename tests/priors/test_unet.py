import json

import pytest
import torch

from invdiff.priors.adapters import EDMDenoiser
from invdiff.priors.gmm import GaussianMixture
from invdiff.priors.unet import UNet, edm_unet, load_prior, save_prior
from tests.priors import TINY_UNET, randomize



@pytest.mark.parametrize("in_channels, batch", [(1, 1), (3, 3), (2, 5)])
def test_unet_shapes(in_channels, batch, generator):
    net = randomize(UNet(in_channels, **TINY_UNET), generator)
    x = torch.randn(batch, in_channels, 16, 16, generator=generator)
    out = net(x, torch.linspace(-1, 1, batch))
    assert out.shape == x.shape and torch.isfinite(out).all()
    # Fully convolutional: other sizes divisible by 2 ** (levels - 1) work too.
    assert net(torch.randn(batch, in_channels, 8, 24, generator=generator), 0.0).shape == (
        batch,
        in_channels,
        8,
        24,
    )
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, in_channels, 15, 16), 0.0)


def test_default_unet_size_and_shape(generator):
    net = UNet(3)
    assert 5.0e6 < sum(p.numel() for p in net.parameters()) < 5.6e6
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64, generator=generator), torch.zeros(2)).shape == (2, 3, 64, 64)


def test_fresh_network_is_zero_and_denoiser_is_c_skip_x(generator):
    d = edm_unet(in_channels=2, **TINY_UNET)
    x = torch.randn(3, 2, 16, 16, generator=generator)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    c_skip = (0.25 / (sigma.square() + 0.25)).view(-1, 1, 1, 1)
    torch.testing.assert_close(d(x, sigma), c_skip * x)
    assert d.shape == (2, 16, 16)


def test_edm_preconditioning_formula(generator):
    calls = {}

    def F(x_in, c_noise):
        calls["x_in"], calls["c_noise"] = x_in, c_noise
        return torch.sin(x_in) + c_noise.view(-1, 1, 1, 1)

    sd = 0.7
    edm = EDMDenoiser(F, sd)
    x = torch.randn(2, 1, 4, 4, generator=generator, dtype=torch.float64)
    sigma = torch.tensor([0.05, 3.0], dtype=torch.float64)
    out = edm(x, sigma)
    s = sigma.view(-1, 1, 1, 1)
    c_in = 1 / (s**2 + sd**2).sqrt()
    torch.testing.assert_close(calls["x_in"], c_in * x)
    torch.testing.assert_close(calls["c_noise"], sigma.log() / 4)
    expected = sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt() * (
        torch.sin(c_in * x) + sigma.log().view(-1, 1, 1, 1) / 4
    )
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_load_roundtrip_is_exact(suffix, tmp_path, generator):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    d = edm_unet(0.6, data_scale=2.0, data_shift=-1.0, in_channels=2, dropout=0.1, **TINY_UNET)
    randomize(d, generator)
    path = tmp_path / "sub" / f"prior{suffix}"
    save_prior(path, d)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind
    loaded = load_prior(path)
    assert isinstance(loaded, EDMDenoiser) and isinstance(loaded.model, UNet)
    assert loaded.model.config == d.model.config and loaded.config == d.config
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(3, 2, 16, 16, generator=generator)
    sigma = torch.tensor([0.01, 0.5, 20.0])
    torch.testing.assert_close(loaded(x, sigma), d.eval()(x, sigma), rtol=0, atol=0)


def test_torch_file_holds_only_strings_and_tensors(tmp_path):
    path = tmp_path / "prior.pt"
    save_prior(path, edm_unet(in_channels=1, **TINY_UNET))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "invdiff-prior" and set(raw) == {"format", "version", "config", "state_dict"}
    config = json.loads(raw["config"])
    assert config["adapter"]["kind"] == "edm" and config["network"]["arch"] == "unet"


def test_save_prior_rejects_other_denoisers(tmp_path):
    gmm = GaussianMixture(torch.zeros(1, 2), torch.eye(2)[None])
    with pytest.raises(ValueError, match="denoiser"):
        save_prior(tmp_path / "gmm.pt", gmm)
    assert not list(tmp_path.iterdir())


def test_float64(generator):
    d = randomize(edm_unet(in_channels=1, **TINY_UNET), generator)
    x = torch.randn(2, 1, 16, 16, generator=generator)
    out32 = d(x, 0.4)
    out64 = d.double()(x.double(), 0.4)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, out32.double(), rtol=1e-4, atol=1e-4)


def test_gradient_flows_to_input(generator):
    d = randomize(edm_unet(in_channels=2, **TINY_UNET), generator).requires_grad_(False)
    x = torch.randn(2, 2, 16, 16, generator=generator, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x, 0.8).square().sum(), x)
    assert torch.isfinite(grad).all()
    # Not only the c_skip path: the network's Jacobian contributes.
    x_detached = x.detach()
    skip_only = 2 * (0.25 / (0.64 + 0.25)) ** 2 * x_detached
    assert (grad - skip_only).abs().max() > 1e-3
