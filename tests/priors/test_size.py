"""Image sizes a prior runs at: ``Denoiser.input_size``, every network's ``size_multiple`` and every
loader's ``source``.

Each network's ``size_multiple`` is checked three ways: the network runs at a size that is a
multiple of it (not its training size, not square); it fails, in the network itself, at a size
that is a multiple of half of it only; and the smallest feature map seen inside the network
(its bottleneck) is exactly ``1 / size_multiple`` of the input, so the number is the network's
count of halvings and not only what an explicit size check says.
"""

import json

import pytest
import torch
from torch import nn

from invdiff.priors.adapters import EDMDenoiser, ScaledDenoiser, network_size_multiple
from invdiff.priors.adm import ADMUNet
from invdiff.priors.base import Denoiser
from invdiff.priors.checkpoints import load_adm, load_diffusers, load_edm
from invdiff.priors.gaussian import fit_low_rank_gaussian, load_gaussian, save_gaussian
from invdiff.priors.gmm import GaussianMixture
from invdiff.priors.packaged import available, load_packaged
from invdiff.priors.phantom import phantom_gaussian
from invdiff.priors.unet import edm_unet, load_prior, save_prior
from tests.priors import randomize

# Three levels each: two halvings, size_multiple 4.
UNET_TINY = {
    "channels": 32,
    "channel_mult": (1, 2, 2),
    "num_blocks": 1,
    "attn_resolutions": (8,),
    "img_resolution": 16,
}
ADM_TINY = {
    "image_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "model_channels": 32,
    "num_res_blocks": 1,
    "attention_resolutions": (16,),
    "channel_mult": (1, 2, 2),
    "num_head_channels": 16,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "learn_sigma": True,
}
EDM_TINY = {
    "img_resolution": 16,
    "in_channels": 3,
    "out_channels": 3,
    "model_channels": 32,
    "channel_mult": (1, 2, 2),
    "num_blocks": 1,
    "attn_resolutions": (8,),
}


def _project_unet(tmp_path, generator):
    denoiser = edm_unet(in_channels=2, **UNET_TINY)
    randomize(denoiser.model, generator)
    save_prior(tmp_path / "unet.pt", denoiser)
    return load_prior(tmp_path / "unet.pt"), str(tmp_path / "unet.pt")


def _adm(tmp_path, generator):
    path = tmp_path / "adm.pt"
    torch.save(randomize(ADMUNet(**ADM_TINY), generator).state_dict(), path)
    return load_adm(path, config=ADM_TINY), str(path)


def _edm(arch):
    def build(tmp_path, generator):
        from deepinv.models import ADMUNet as EDMADMUNet
        from deepinv.models import NCSNpp

        net = {"adm": EDMADMUNet, "ncsnpp": NCSNpp}[arch](pretrained=None, **EDM_TINY)
        path = tmp_path / "edm.pt"
        torch.save(randomize(net, generator).state_dict(), path)
        return load_edm(path, arch, **EDM_TINY), str(path)

    return build


def _diffusers(tmp_path, generator):
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=16,
        in_channels=2,
        out_channels=2,
        layers_per_block=1,
        block_out_channels=(32, 32, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    randomize(unet, generator).save_pretrained(tmp_path / "diffusers")
    return load_diffusers(tmp_path / "diffusers"), str(tmp_path / "diffusers")


NETWORKS = {
    "invdiff-unet": (_project_unet, 4),
    "adm": (_adm, 4),
    "edm-adm": (_edm("adm"), 4),
    "edm-ncsnpp": (_edm("ncsnpp"), 4),
    "diffusers": (_diffusers, 4),
}


def _bottleneck(net: nn.Module, run) -> tuple[int, int]:
    """The smallest ``(H, W)`` of any 4-d tensor a submodule of ``net`` returns during ``run()``."""
    sizes = []

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            sizes.append(tuple(output.shape[-2:]))

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return min(s[0] for s in sizes), min(s[1] for s in sizes)


def _check_network_size_multiple(denoiser, expected, generator):
    m = denoiser.size_multiple
    assert m == expected
    c = denoiser.shape[0]
    # 1. A multiple of m (neither the training size nor square) runs, and the bottleneck is 1/m of it.
    x = torch.randn(1, c, 3 * m, 5 * m, generator=generator)
    with torch.no_grad():
        out = denoiser(x, 0.7)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert _bottleneck(denoiser.model, lambda: denoiser(x, 0.7)) == (3, 5)
    # 2. A multiple of m / 2 only fails in the network.
    bad = torch.randn(1, c, 3 * m + m // 2, 5 * m, generator=generator)
    with pytest.raises((ValueError, RuntimeError)), torch.no_grad():
        denoiser(bad, 0.7)
    # 3. input_size rounds up to it.
    assert denoiser.input_size((2, c, 3 * m - 1, 5 * m + 1)) == (3 * m, 6 * m)
    assert denoiser.input_size((2, c, 3 * m, 5 * m)) == (3 * m, 5 * m)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_size_multiple_and_source(name, tmp_path, generator):
    build, expected = NETWORKS[name]
    denoiser, source = build(tmp_path, generator)
    assert denoiser.source == source
    _check_network_size_multiple(denoiser, expected, generator)


@pytest.mark.parametrize("name", available())
def test_packaged_priors_size_multiple_and_source(name, generator):
    denoiser = load_packaged(name)
    assert denoiser.source == f"packaged:{name}"
    assert len(denoiser.model.config["channel_mult"]) == 4
    _check_network_size_multiple(denoiser, 8, generator)
    assert denoiser.input_size((1, denoiser.shape[0], 320, 372)) == (320, 376)


def test_size_multiple_follows_levels():
    for levels in (1, 2, 4):
        mult = (1,) * levels
        unet = edm_unet(in_channels=1, channels=32, channel_mult=mult, num_blocks=1)
        assert unet.size_multiple == 2 ** (levels - 1)
        adm = ADMUNet(image_size=32, model_channels=32, channel_mult=mult, num_res_blocks=1)
        assert adm.size_multiple == 2 ** (levels - 1)


def test_unknown_network_defaults_to_any_size():
    assert network_size_multiple(lambda x, sigma: x) == 1
    denoiser = ScaledDenoiser(lambda x, sigma: x, shape=(1, 8, 8))
    assert denoiser.size_multiple == 1 and denoiser.input_size((1, 1, 7, 9)) == (7, 9)
    assert isinstance(EDMDenoiser(nn.Identity()).size_multiple, int)


# ----------------------------------------------------------------------------------------------
# input_size: checks and messages.


class _Toy(Denoiser):
    def __init__(self, shape, size_multiple=1, source=None):
        super().__init__()
        self.shape, self.size_multiple, self.source = shape, size_multiple, source


def test_channel_mismatch_names_prior_channels_and_shapes():
    prior = _Toy((3, 256, 256), 32, "data/checkpoints/ffhq_10m.pt")
    with pytest.raises(ValueError) as info:
        prior.input_size((1, 1, 64, 64))
    assert str(info.value) == (
        "prior data/checkpoints/ffhq_10m.pt: models 3-channel images (trained at 3 x 256 x 256); "
        "the problem's unknown x is (1, 1, 64, 64) with 1 channel"
    )
    with pytest.raises(ValueError, match=r"^prior _Toy: models 1-channel .* \(4, 2, 8, 8\) with 2 channels$"):
        _Toy((1, 8, 8)).input_size((4, 2, 8, 8))


def test_rounding_up_and_shape_none():
    prior = _Toy((2, 64, 64), 8)
    assert prior.input_size((2, 2, 320, 372)) == (320, 376)
    assert prior.input_size(torch.Size([1, 2, 1, 9])) == (8, 16)
    assert _Toy(None, 16).input_size((1, 5, 17, 32)) == (32, 32)  # no shape: no channel check


def test_bad_x_shape():
    with pytest.raises(ValueError, match=r"x_shape: expected the unknown's \(B, C, H, W\)"):
        _Toy((1, 8, 8)).input_size((1, 8, 8))


def test_fixed_size_priors(generator, tmp_path):
    covs = torch.eye(48, dtype=torch.float64)[None].expand(2, 48, 48)
    gmm = GaussianMixture(torch.zeros(2, 48, dtype=torch.float64), covs, shape=(3, 4, 4))
    gaussian = fit_low_rank_gaussian(torch.randn(6, 1, 4, 6, generator=generator), 3)
    for prior in (gmm, gaussian):
        assert prior.size_multiple is None
        c, h, w = prior.shape
        assert prior.input_size((5, c, h, w)) == (h, w)
        with pytest.raises(ValueError, match=rf"runs only at its fixed size {h} x {w} .* of size 8 x 8$"):
            prior.input_size((5, c, 8, 8))
        with pytest.raises(ValueError, match=rf"models {c}-channel images"):
            prior.input_size((5, c + 1, h, w))
    save_gaussian(gaussian, tmp_path / "g.pt")
    assert load_gaussian(tmp_path / "g.pt").source == str(tmp_path / "g.pt")
    with pytest.raises(ValueError, match="declares no shape"):
        _Toy(None, None).input_size((1, 1, 4, 4))


def test_phantom_gaussian_source_and_fixed_size(tmp_path):
    prior = phantom_gaussian(16, n_train=12, rank=4)
    assert prior.source == "phantom_gaussian:real_16_n12_r4" and prior.size_multiple is None
    cached = phantom_gaussian(16, complex_=True, n_train=12, rank=4, cache_dir=tmp_path)
    path = str(tmp_path / "phantom_gaussian_complex_16_n12_r4.pt")
    assert cached.source == path
    assert phantom_gaussian(16, complex_=True, n_train=12, rank=4, cache_dir=tmp_path).source == path
    with pytest.raises(ValueError, match=f"prior {path}: runs only at its fixed size 16 x 16"):
        cached.input_size((1, 2, 32, 32))


def test_invdiff_checkpoint_config_is_unchanged(tmp_path):
    """size_multiple and source are derived, not stored: the file format stays as it was."""
    save_prior(tmp_path / "p.pt", edm_unet(in_channels=1, **UNET_TINY))
    config = json.loads(torch.load(tmp_path / "p.pt", weights_only=True)["config"])
    assert "size_multiple" not in config["adapter"] and "source" not in config["adapter"]
