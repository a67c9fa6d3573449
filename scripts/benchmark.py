"""Run a benchmark and print its table: ``python scripts/benchmark.py benchmark=operators``.

The batch benchmarks (``benchmark=mri``, ``benchmark=ct``) take the prior from the ``prior``
group (``prior=adm prior.path=... prior.config=dds_fastmri_320``, ``prior=unet
prior.path=...``; default: the benchmark's own, ``configs/prior/<benchmark>.yaml``), and
``data.root``, ``shard`` and ``num_shards`` (or run under ``torchrun``, one shard per rank).
A batch benchmark in which a method failed on every slice of a setting prints its summary and
exits with an error naming them. Config nodes with a ``_target_`` inside a benchmark's config (e.g. a case's prior) are
instantiated here; the library functions take typed arguments.
"""

import inspect
from pathlib import Path

import hydra
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from invdiff.benchmarks import BENCHMARKS
from invdiff.benchmarks.reconstruction import Case
from invdiff.benchmarks.volumes import MethodsFailed
from invdiff.fileio import atomic_write_text
from invdiff.run import Method


def _reconstruction_cases(tasks: dict, data_root: str) -> list[Case]:
    """Each task's default problem, prior and sampler (``configs/config.yaml`` with the task's overrides)."""
    cases = []
    for task, spec in tasks.items():
        overrides = [f"task={task}", f"sampler.steps={spec['steps']}", f"data_root={data_root}",
                     *spec.get("overrides", [])]
        cfg = compose(config_name="config", overrides=overrides)
        method = Method.from_sampler_config(OmegaConf.to_container(cfg.sampler, resolve=True))
        cases.append(Case(task, instantiate(cfg.task, _partial_=True), instantiate(cfg.prior), method,
                          int(spec["count"])))
    return cases


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    params = OmegaConf.to_container(cfg.benchmark, resolve=True)
    name = params.pop("name")
    if name not in BENCHMARKS:
        raise ValueError(f"benchmark.name: expected one of {sorted(BENCHMARKS)}, got {name!r}")
    fn = BENCHMARKS[name]
    accepted = inspect.signature(fn).parameters
    params = instantiate(params, _convert_="all")
    if name == "reconstruction":
        params["cases"] = _reconstruction_cases(params.pop("tasks"), cfg.data_root)
    if "data" in accepted:
        params["data"] = {**OmegaConf.to_container(cfg.data, resolve=True), "data_root": cfg.data_root}
    if "prior" in accepted:
        params["prior"] = instantiate(cfg.prior) if "prior" in cfg else None
    for key in ("shard", "num_shards"):
        if key in accepted:
            params[key] = cfg[key]
    failure = None
    try:
        report = fn(**params)
    except MethodsFailed as err:  # the summary is written; show it, then exit with the error
        report, failure = err.report, err
    print(report)
    if cfg.output:
        atomic_write_text(Path(hydra.utils.to_absolute_path(cfg.output)), report + "\n")
    if failure is not None:
        raise SystemExit(f"error: {failure}")


if __name__ == "__main__":
    main()
