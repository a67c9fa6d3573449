"""Every checkpoint layout: a file written from a network with random weights loads and
reproduces that network; the ADM implementation reproduces deepinv's DiffUNet (the FFHQ-256
guided-diffusion network); broken files give errors that say what is wrong."""

import builtins
import json
import sys

import pytest
import torch

from invdiff.priors.adapters import ScaledDenoiser, VPDenoiser
from invdiff.priors.adm import ADM_CONFIGS, ADMUNet
from invdiff.priors.checkpoints import (
    LAYOUTS,
    load_adm,
    load_checkpoint,
    load_diffusers,
    load_edm,
    load_state_dict_strict,
)
from invdiff.priors.unet import edm_unet, save_prior
from invdiff.schedules import vp_alphas_cumprod, vp_sigmas
from tests.priors import randomize

ADM_TINY = {
    "image_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "model_channels": 32,
    "num_res_blocks": 1,
    "attention_resolutions": (16,),
    "channel_mult": (1, 2),
    "num_heads": 4,
    "num_head_channels": 16,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "learn_sigma": True,
    "dropout": 0.0,
}
EDM_TINY = {
    "adm": {
        "img_resolution": 16,
        "in_channels": 3,
        "out_channels": 3,
        "model_channels": 32,
        "channel_mult": (1, 2),
        "num_blocks": 1,
        "attn_resolutions": (8,),
    },
    "ncsnpp": {
        "img_resolution": 16,
        "in_channels": 3,
        "out_channels": 3,
        "model_channels": 32,
        "channel_mult": (1, 2),
        "num_blocks": 1,
        "attn_resolutions": (8,),
    },
}


def _adm_file(tmp_path, generator, config=ADM_TINY):
    net = randomize(ADMUNet(**config), generator).eval()
    path = tmp_path / "adm.pt"
    torch.save(net.state_dict(), path)
    return net, path


# ----------------------------------------------------------------------------------------------
# Each layout reproduces the network it was written from.


@pytest.mark.parametrize("data_range", [None, (0.0, 1.0)])
def test_adm_layout_reproduces_network(data_range, tmp_path, generator):
    net, path = _adm_file(tmp_path, generator)
    denoiser = load_checkpoint("adm", path, config=ADM_TINY, data_range=data_range)
    assert isinstance(denoiser, VPDenoiser) and denoiser.shape == (3, 32, 32)
    ac = vp_alphas_cumprod()
    scale, shift = (1.0, 0.0) if data_range is None else (2.0, -1.0)
    sigma = vp_sigmas(ac)[[3, 700]].float() / scale  # in the caller's units, on the grid in the network's
    x = torch.randn(2, 3, 32, 32, generator=generator)
    # By hand: network units, on-grid timesteps, eps from the first 3 of 6 channels.
    s = (scale * sigma).view(-1, 1, 1, 1)
    t = denoiser.sigma_to_t(scale * sigma)
    with torch.no_grad():
        eps = net((scale * x + shift) / (1 + s**2).sqrt(), t.float())[:, :3]
    expected = ((scale * x + shift - s * eps) - shift) / scale
    torch.testing.assert_close(t, torch.tensor([3.0, 700.0], dtype=torch.float64), rtol=0, atol=1e-4)
    torch.testing.assert_close(denoiser(x, sigma), expected, rtol=1e-5, atol=1e-5)
    # And exactly what the same adapter gives around the in-memory network.
    reference = VPDenoiser(net, ac, "eps", data_scale=denoiser.data_scale, data_shift=denoiser.data_shift)
    torch.testing.assert_close(denoiser(x, sigma), reference(x, sigma), rtol=0, atol=0)


@pytest.mark.slow
def test_adm_ffhq_256_matches_deepinv_diffunet(generator):
    """Our ADM at the ``ffhq_256`` config loads DiffUNet's state dict and gives DiffUNet's output."""
    from deepinv.models import DiffUNet

    ref = randomize(
        DiffUNet(in_channels=3, out_channels=3, large_model=False, pretrained=None), generator
    ).eval()
    state = {
        k: v for k, v in ref.state_dict().items() if not k.startswith("sqrt_")
    }  # deepinv's schedule buffers
    ours = ADMUNet(**ADM_CONFIGS["ffhq_256"]).eval()
    assert list(ours.state_dict()) == list(state)
    load_state_dict_strict(ours, state, "DiffUNet(pretrained=None)")
    x = torch.randn(1, 3, 256, 256, generator=generator)
    t = torch.tensor([417.0])
    with torch.no_grad():
        expected = ref.forward_diffusion(x, t)
        out = ours(x, t)
    assert out.shape == (1, 6, 256, 256)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("arch", ["adm", "ncsnpp"])
def test_edm_layout_reproduces_deepinv_network(arch, tmp_path, generator):
    from deepinv.models import ADMUNet as EDMADMUNet
    from deepinv.models import NCSNpp

    config = EDM_TINY[arch]
    net = randomize({"adm": EDMADMUNet, "ncsnpp": NCSNpp}[arch](pretrained=None, **config), generator).eval()
    net.pixel_std = 0.5
    path = tmp_path / "edm.pt"
    torch.save(net.state_dict(), path)
    x = torch.randn(2, 3, 16, 16, generator=generator)
    sigma = torch.tensor([0.05, 3.0])
    # Native [-1, 1] data.
    denoiser = load_checkpoint("edm", path, arch=arch, **config)
    assert isinstance(denoiser, ScaledDenoiser) and denoiser.shape == (3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(denoiser(x, sigma), net(x, sigma), rtol=0, atol=0)
    # [0, 1] data through our affine map = deepinv's own [0, 1] -> [-1, 1] switch.
    denoiser01 = load_edm(path, arch, data_range=(0.0, 1.0), **config)
    net._was_trained_on_minus_one_one = True
    with torch.no_grad():
        torch.testing.assert_close(denoiser01(x, sigma), net(x, sigma), rtol=1e-6, atol=1e-6)


def test_invdiff_layout_roundtrip_of_vp_adm(tmp_path, generator):
    net = randomize(ADMUNet(**ADM_TINY), generator).eval()
    ac = vp_alphas_cumprod(200, 1e-4, 0.05)
    denoiser = VPDenoiser(net, ac, "v", data_scale=2.0, data_shift=-1.0, timesteps="nearest")
    save_prior(tmp_path / "vp.pt", denoiser)
    loaded = load_checkpoint("invdiff", tmp_path / "vp.pt")
    assert isinstance(loaded, VPDenoiser) and loaded.num_timesteps == 200 and loaded.timesteps == "nearest"
    torch.testing.assert_close(loaded.alphas_cumprod, ac, rtol=0, atol=0)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    torch.testing.assert_close(loaded(x, 0.3), denoiser(x, 0.3), rtol=0, atol=0)


def _diffusers_unet(generator):
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=16,
        in_channels=2,
        out_channels=2,
        layers_per_block=1,
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    return randomize(unet, generator).eval()


@pytest.mark.parametrize("layout", ["model", "pipeline"])
def test_diffusers_layout_reproduces_network(layout, tmp_path, generator):
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler

    unet = _diffusers_unet(generator)
    sched = {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction",
    }
    if layout == "model":
        folder = tmp_path / "model"
        unet.save_pretrained(folder)
        (folder / "scheduler_config.json").write_text(json.dumps(sched))
    else:
        folder = tmp_path / "pipeline"
        unet.save_pretrained(folder / "unet")
        (folder / "scheduler").mkdir()
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    denoiser = load_checkpoint("diffusers", folder)
    assert denoiser.prediction == "v" and denoiser.shape == (2, 16, 16)
    # The schedule agrees with diffusers' own (which computes it in float32).
    ac = DDPMScheduler(**{k: v for k, v in sched.items() if k != "_class_name"}).alphas_cumprod
    torch.testing.assert_close(denoiser.alphas_cumprod.float(), ac, rtol=1e-5, atol=0)
    # By hand: on-grid sigma, v-prediction: x0 = sqrt(abar) x_vp - sqrt(1 - abar) v.
    steps = torch.tensor([10, 900])
    abar = denoiser.alphas_cumprod[steps].float().view(-1, 1, 1, 1)
    sigma = ((1 - abar) / abar).sqrt().flatten()
    x = torch.randn(2, 2, 16, 16, generator=generator)
    x_vp = abar.sqrt() * x
    with torch.no_grad():
        v = unet(x_vp, steps.float()).sample
    expected = abar.sqrt() * x_vp - (1 - abar).sqrt() * v
    torch.testing.assert_close(denoiser(x, sigma), expected, rtol=1e-5, atol=1e-5)


def test_diffusers_defaults_without_scheduler_config(tmp_path, generator):
    pytest.importorskip("diffusers")
    _diffusers_unet(generator).save_pretrained(tmp_path)
    denoiser = load_diffusers(tmp_path)
    assert denoiser.prediction == "eps"
    torch.testing.assert_close(denoiser.alphas_cumprod, vp_alphas_cumprod(), rtol=0, atol=0)


def test_diffusers_mismatched_keys_are_named(tmp_path, generator):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    pytest.importorskip("diffusers")
    _diffusers_unet(generator).save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    state = safetensors_torch.load_file(weights)
    state.pop("conv_in.bias")
    state["bogus.weight"] = torch.zeros(1)
    safetensors_torch.save_file(state, weights)
    with pytest.raises(
        ValueError, match=r"1 missing keys \['conv_in.bias'\], 1 unexpected keys \['bogus.weight'\]"
    ):
        load_diffusers(tmp_path)


def test_diffusers_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r"pip install 'invdiff\[diffusers\]'"):
        load_diffusers(tmp_path)


# ----------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_missing_file_names_path_and_where_to_put_it(layout, tmp_path):
    if layout == "diffusers":
        pytest.importorskip("diffusers")
    path = tmp_path / "nowhere" / "weights.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(layout, path)
    message = str(info.value)
    assert str(path.parent) in message and "Place the checkpoint" in message and "prior.path" in message


def test_mismatched_keys_are_named(tmp_path, generator):
    net, path = _adm_file(tmp_path, generator)
    state = net.state_dict()
    state.pop("out.2.bias")
    state["input_blocks.9.0.bogus.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        load_adm(path, config=ADM_TINY)
    message = str(info.value)
    assert "1 missing keys ['out.2.bias']" in message
    assert "1 unexpected keys ['input_blocks.9.0.bogus.weight']" in message and str(path) in message


def test_wrong_architecture_is_named(tmp_path, generator):
    _, path = _adm_file(tmp_path, generator)
    with pytest.raises(ValueError, match="missing keys"):
        load_adm(path, config={**ADM_TINY, "num_res_blocks": 2})
    with pytest.raises(
        ValueError, match=r"wrong shape .*time_embed.0.weight: \(128, 32\) in file, \(256, 64\)"
    ):
        load_adm(path, config={**ADM_TINY, "model_channels": 64})
    with pytest.raises(ValueError, match="available: .*dds_fastmri_320.*ffhq_256"):
        load_adm(path, config="ffhq_512")


def test_nested_and_dataparallel_state_dicts_load(tmp_path, generator):
    net, path = _adm_file(tmp_path, generator)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "step": torch.tensor(3)}, path
    )
    denoiser = load_adm(path, config=ADM_TINY)
    x = torch.randn(1, 3, 32, 32, generator=generator)
    torch.testing.assert_close(denoiser(x, 0.5), VPDenoiser(net)(x, 0.5), rtol=0, atol=0)


def test_safetensors_state_dict_loads(tmp_path, generator):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    net = randomize(ADMUNet(**ADM_TINY), generator).eval()
    safetensors_torch.save_file(net.state_dict(), tmp_path / "adm.safetensors")
    denoiser = load_adm(tmp_path / "adm.safetensors", config=ADM_TINY)
    x = torch.randn(1, 3, 32, 32, generator=generator)
    torch.testing.assert_close(denoiser(x, 0.5), VPDenoiser(net)(x, 0.5), rtol=0, atol=0)


def test_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="expected a state dict .* found a list"):
        load_adm(path, config=ADM_TINY)
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="list.pt"):
        load_adm(path, config=ADM_TINY)
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an invdiff prior"):
        load_checkpoint("invdiff", path)


class _Payload:
    """Unpickling this runs code; a weights-only load must refuse it."""

    def __reduce__(self):
        return (exec, ("import builtins; builtins._invdiff_unpickled = True",))


@pytest.mark.hostile
@pytest.mark.parametrize(
    "layout, kwargs", [("adm", {"config": ADM_TINY}), ("edm", EDM_TINY["adm"]), ("invdiff", {})]
)
def test_arbitrary_pickled_objects_are_refused(layout, kwargs, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(layout, path, **kwargs)
    assert not hasattr(builtins, "_invdiff_unpickled")


def test_unknown_layout_lists_available(tmp_path):
    with pytest.raises(ValueError, match="available: \\['adm', 'diffusers', 'edm', 'invdiff'\\]"):
        load_checkpoint("ckpt", tmp_path / "x.pt")
    with pytest.raises(ValueError, match="available: \\['adm', 'ncsnpp'\\]"):
        load_edm(tmp_path / "x.pt", arch="unet")
    save_prior(tmp_path / "ours.pt", edm_unet(in_channels=1, channels=32, channel_mult=(1,), num_blocks=1))
    assert load_checkpoint("invdiff", tmp_path / "ours.pt").shape == (1, 64, 64)
