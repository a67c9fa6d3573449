"""Every option of every config group composes, and every ``_target_`` in it instantiates.

Checkpoint priors are instantiated from random-weight files written in their layout at tiny
sizes (the config's own architecture is replaced by a tiny one of the same layout).
"""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from invdiff.priors.base import Denoiser
from invdiff.run import Method
from invdiff.samplers import SAMPLERS
from invdiff.schedules import SCHEDULES
from invdiff.problems import Problem

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_PHANTOM = ["task.size=16", "task.image=phantom", "prior=phantom", "prior.n_train=40", "prior.rank=8"]
TINY_ADM = {
    "image_size": 16, "in_channels": 3, "model_channels": 32, "num_res_blocks": 1,
    "attention_resolutions": [8], "channel_mult": [1, 2], "num_head_channels": 16, "learn_sigma": True,
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _compose(overrides: list[str], config_name: str = "config"):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name=config_name, overrides=overrides)


def _write_adm(path: Path) -> list[str]:
    from invdiff.priors.adm import ADMUNet

    torch.save(ADMUNet(**TINY_ADM).state_dict(), path)
    return [f"prior.path={path}", f"prior.config={OmegaConf.to_container(OmegaConf.create(TINY_ADM))}".replace("'", "")]


def _write_edm(path: Path) -> list[str]:
    from invdiff.priors.checkpoints import _edm_archs

    net = _edm_archs()["adm"](img_resolution=16, in_channels=3, out_channels=3, model_channels=32,
                              channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], pretrained=None)
    torch.save(net.state_dict(), path)
    return [f"prior.path={path}", "prior.img_resolution=16", "+prior.model_channels=32", "+prior.channel_mult=[1,2]",
            "+prior.num_blocks=1", "+prior.attn_resolutions=[8]"]


def _write_diffusers(path: Path) -> list[str]:
    diffusers = pytest.importorskip("diffusers")
    net = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 32),
                                down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8, layers_per_block=1)
    net.save_pretrained(path)
    return [f"prior.folder={path}"]


def _write_unet(path: Path) -> list[str]:
    from invdiff.priors.unet import edm_unet, save_prior

    save_prior(path, edm_unet(in_channels=1, channels=16, channel_mult=(1, 2), num_blocks=1,
                              attn_resolutions=(), img_resolution=16, num_groups=8))
    return [f"prior.path={path}"]


COMPLEX = ("mri", "mri3d", "fastmri")
"""Tasks (and their default priors) on complex images, 2 channels."""

CHECKPOINTS = {"adm": _write_adm, "edm": _write_edm, "diffusers": _write_diffusers, "unet": _write_unet}


def test_every_group_has_options():
    for group in ("task", "prior", "sampler", "benchmark"):
        assert _options(group), group


FILE_TASKS = ("fastmri", "ct_sinogram")
"""Tasks on a user's file (tests/problems, tests/pipeline/test_reconstruct.py); they need task.file."""


def _simulated_tasks() -> list[str]:
    return [t for t in _options("task") if t not in FILE_TASKS]


@pytest.mark.parametrize("task", _simulated_tasks())
def test_task_composes_and_instantiates_with_the_phantom_prior(task, tmp_path):
    complex_ = str(task in COMPLEX).lower()
    cfg = _compose([f"task={task}", f"data_root={tmp_path}", *TINY_PHANTOM, f"prior.complex_={complex_}"])
    built = instantiate(cfg.task)
    assert isinstance(built, Problem) and built.name == task
    assert built.y.shape == built.op.A(built.x_true).shape and built.x_shape == tuple(built.x_true.shape)
    prior = instantiate(cfg.prior)
    assert isinstance(prior, Denoiser)
    assert prior.shape == tuple(built.x_true.shape[1:])
    assert prior.input_size(built.x_shape) == built.x_shape[-2:]
    x = built.x_true + 0.1 * torch.randn(built.x_true.shape, generator=torch.Generator().manual_seed(0))
    assert prior(x, 0.1).shape == x.shape


@pytest.mark.parametrize("task", _simulated_tasks())
def test_task_default_prior_fits_the_task(task, tmp_path):
    """Each task's default config (its prior named after it) at full size: shapes agree."""
    cfg = _compose([f"task={task}", f"data_root={tmp_path}", "prior.n_train=40", "prior.rank=8"]
                   if _is_phantom(task) else [f"task={task}", f"data_root={tmp_path}"])
    built = instantiate(cfg.task)
    prior = instantiate(cfg.prior)
    assert prior.shape == tuple(built.x_true.shape[1:])
    assert prior.input_size(built.x_shape) == built.x_shape[-2:]


def _is_phantom(prior: str) -> bool:
    return "phantom_gaussian" in (CONFIGS / "prior" / f"{prior}.yaml").read_text()


@pytest.mark.parametrize("prior", _options("prior"))
def test_prior_composes_and_instantiates(prior, tmp_path):
    overrides = [f"prior={prior}", f"data_root={tmp_path}"]
    if prior in CHECKPOINTS:
        overrides += CHECKPOINTS[prior](tmp_path / "checkpoint")
        size, channels = 16, 1 if prior == "unet" else 3
    elif _is_phantom(prior):
        overrides += ["task.size=16", "prior.n_train=40", "prior.rank=8"]
        size, channels = 16, 2 if OmegaConf.load(CONFIGS / "prior" / f"{prior}.yaml").complex_ else 1
    else:
        size, channels = 64, 2 if prior in COMPLEX else 1
    denoiser = instantiate(_compose(overrides).prior)
    assert isinstance(denoiser, Denoiser)
    x = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(denoiser(x, 0.5)).all()


@pytest.mark.parametrize("prior", sorted(CHECKPOINTS))
def test_missing_checkpoint_says_which_file_and_where(prior, tmp_path):
    cfg = _compose([f"prior={prior}", f"data_root={tmp_path}"])
    with pytest.raises(Exception, match="never downloads") as err:
        instantiate(cfg.prior)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("sampler", _options("sampler"))
def test_sampler_config_names_a_registered_sampler(sampler):
    cfg = _compose([f"sampler={sampler}"])
    entry = OmegaConf.to_container(cfg.sampler, resolve=True)
    name = entry.pop("name")
    assert entry.get("sampler", name) in SAMPLERS  # a paper config names the sampler it configures
    assert cfg.sampler.schedule in SCHEDULES
    assert cfg.sampler.steps >= 1
    Method.from_config(name, {"sampler": name, **entry}, where="sampler")  # params and schedule_params accepted


@pytest.mark.parametrize("benchmark", _options("benchmark"))
def test_benchmark_composes(benchmark):
    from invdiff.benchmarks import BENCHMARKS

    cfg = _compose([f"benchmark={benchmark}"], config_name="benchmark")
    assert cfg.benchmark.name in BENCHMARKS


def test_unknown_option_lists_the_available_ones():
    with pytest.raises(Exception, match="Available options") as err:
        _compose(["task=nope"])
    assert "mri" in str(err.value)
