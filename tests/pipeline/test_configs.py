"""Every option of every config group composes, and every ``_target_`` in it instantiates."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from invdiff.priors.base import Denoiser
from invdiff.samplers import SAMPLERS
from invdiff.schedules import SCHEDULES
from invdiff.tasks import Task

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["task.size=16", "prior.n_train=40", "prior.rank=8"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _compose(overrides: list[str], config_name: str = "config"):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name=config_name, overrides=overrides)


def test_every_group_has_options():
    for group in ("task", "prior", "sampler", "benchmark"):
        assert _options(group), group


@pytest.mark.parametrize("task", _options("task"))
def test_task_composes_and_instantiates(task, tmp_path):
    cfg = _compose([f"task={task}", f"data_root={tmp_path}", *TINY])
    built = instantiate(cfg.task)
    assert isinstance(built, Task) and built.name == task
    assert built.y.shape == built.op.A(built.x_true).shape
    prior = instantiate(cfg.prior)
    assert isinstance(prior, Denoiser)
    assert prior.shape == tuple(built.x_true.shape[1:])


@pytest.mark.parametrize("prior", _options("prior"))
def test_prior_composes_and_instantiates(prior, tmp_path):
    cfg = _compose([f"prior={prior}", f"data_root={tmp_path}", *TINY])
    assert isinstance(instantiate(cfg.prior), Denoiser)


@pytest.mark.parametrize("sampler", _options("sampler"))
def test_sampler_config_names_a_registered_sampler(sampler):
    cfg = _compose([f"sampler={sampler}"])
    assert cfg.sampler.name in SAMPLERS
    assert cfg.sampler.schedule in SCHEDULES
    assert cfg.sampler.steps >= 1
    OmegaConf.to_container(cfg.sampler.params, resolve=True)


@pytest.mark.parametrize("benchmark", _options("benchmark"))
def test_benchmark_composes(benchmark):
    from invdiff.benchmarks import BENCHMARKS

    cfg = _compose([f"benchmark={benchmark}"], config_name="benchmark")
    assert cfg.benchmark.name in BENCHMARKS


def test_unknown_option_lists_the_available_ones():
    with pytest.raises(Exception, match="Available options") as err:
        _compose(["task=nope"])
    assert "mri" in str(err.value)
