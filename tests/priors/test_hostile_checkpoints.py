"""Broken prior files: every loader names the file and says what it expected."""

import json
from pathlib import Path

import pytest
import torch

from invdiff.priors.adm import ADMUNet
from invdiff.priors.checkpoints import load_adm, load_diffusers, load_edm
from invdiff.priors.gaussian import load_gaussian
from invdiff.priors.unet import edm_unet, load_prior, save_prior
from tests.priors.test_checkpoints import ADM_TINY, EDM_TINY

TINY = {"channels": 8, "channel_mult": (1,), "num_blocks": 1, "attn_resolutions": (), "num_groups": 4}


def _prior_file(folder: Path, suffix: str) -> Path:
    path = folder / f"ok{suffix}"
    save_prior(path, edm_unet(in_channels=1, **TINY))
    return path


def _truncated(path: Path, name: str) -> Path:
    data = path.read_bytes()
    out = path.with_name(name)
    out.write_bytes(data[: len(data) // 2])
    return out


def _empty(folder: Path, name: str) -> Path:
    (folder / name).write_bytes(b"")
    return folder / name


def _with_metadata(folder: Path, name: str, **meta: str) -> Path:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in edm_unet(in_channels=1, **TINY).state_dict().items()}
    save_file(state, str(folder / name), metadata={"format": "invdiff-prior", "version": "1", **meta})
    return folder / name


def _prior_config(**change) -> str:
    config = {"adapter": {"kind": "edm", "sigma_data": 0.5}, "network": {"arch": "unet", "in_channels": 1, **TINY}}
    config["network"].update(change)
    return json.dumps(config)


PRIOR_CASES = {
    "empty .pt": (lambda d: _empty(d, "empty.pt"), "an empty file"),
    "empty .safetensors": (lambda d: _empty(d, "empty.safetensors"), "an empty file"),
    "truncated .safetensors": (lambda d: _truncated(_prior_file(d, ".safetensors"), "cut.safetensors"),
                               "not a readable safetensors file"),
    "truncated .pt": (lambda d: _truncated(_prior_file(d, ".pt"), "cut.pt"), "not a readable torch checkpoint"),
    "config not JSON": (lambda d: _with_metadata(d, "j.safetensors", config="{not json"),
                        "metadata 'config' is not JSON"),
    "config a JSON list": (lambda d: _with_metadata(d, "l.safetensors", config="[1, 2]"),
                           "metadata 'config' is not"),
    "config with an unknown option": (lambda d: _with_metadata(d, "o.safetensors", config=_prior_config(wings=2)),
                                      "metadata 'config' does not build"),
    "version not a number": (lambda d: _with_metadata(d, "v.safetensors", version="x", config=_prior_config()),
                             "metadata 'version'"),
}


def _named(info: pytest.ExceptionInfo, path: Path, expected: str) -> None:
    message = str(info.value)
    assert str(path) in message, message
    assert expected in message, message


@pytest.mark.hostile
@pytest.mark.parametrize("case", sorted(PRIOR_CASES))
def test_load_prior_names_the_file_and_what_was_expected(case, tmp_path):
    make, expected = PRIOR_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        load_prior(path)
    _named(info, path, expected)


STATE_DICT_CASES = {
    "empty .pt": (lambda d: _empty(d, "empty.pt"), "an empty file"),
    "truncated .pt": (lambda d: _truncated(_state_dict_file(d, "sd.pt"), "cut.pt"),
                      "not a readable torch checkpoint"),
    "truncated .safetensors": (lambda d: _truncated(_state_dict_file(d, "sd.safetensors"), "cut.safetensors"),
                               "not a readable safetensors file"),
}


def _state_dict_file(folder: Path, name: str) -> Path:
    state = {k: v.contiguous() for k, v in ADMUNet(**ADM_TINY).state_dict().items()}
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(folder / name))
    else:
        torch.save(state, folder / name)
    return folder / name


@pytest.mark.hostile
@pytest.mark.parametrize("layout", ["adm", "edm"])
@pytest.mark.parametrize("case", sorted(STATE_DICT_CASES))
def test_state_dict_loaders_name_the_file_and_what_was_expected(layout, case, tmp_path):
    make, expected = STATE_DICT_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        if layout == "adm":
            load_adm(path, ADM_TINY)
        else:
            load_edm(path, "adm", **EDM_TINY["adm"])
    _named(info, path, expected)


GAUSSIAN_CASES = {
    "empty": (lambda d: _empty(d, "g.pt"), "an empty file"),
    "truncated": (lambda d: _truncated(_gaussian_file(d), "cut.pt"), "not a readable torch checkpoint"),
    "a tensor": (lambda d: _saved(d, torch.zeros(3)), "not a Gaussian prior file"),
    "a number where a tensor belongs": (lambda d: _saved(d, {**_gaussian_state(), "mean": 1.0}),
                                        "not a Gaussian prior file"),
}


def _gaussian_state() -> dict:
    from invdiff.priors.gaussian import fit_low_rank_gaussian

    images = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    return fit_low_rank_gaussian(images, 2).state()


def _gaussian_file(folder: Path) -> Path:
    return _saved(folder, _gaussian_state())


def _saved(folder: Path, obj) -> Path:
    torch.save(obj, folder / "saved.pt")
    return folder / "saved.pt"


@pytest.mark.hostile
@pytest.mark.parametrize("case", sorted(GAUSSIAN_CASES))
def test_load_gaussian_names_the_file_and_what_was_expected(case, tmp_path):
    make, expected = GAUSSIAN_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        load_gaussian(path)
    _named(info, path, expected)


@pytest.mark.hostile
def test_diffusers_scheduler_config_not_json_is_named(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, layers_per_block=1)
    unet.save_pretrained(tmp_path)
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ValueError) as info:
        load_diffusers(tmp_path)
    _named(info, tmp_path / "scheduler_config.json", "is not JSON")
