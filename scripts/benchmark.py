"""Run a benchmark and print its table: ``python scripts/benchmark.py benchmark=operators``.

The batch benchmarks (``benchmark=mri``, ``benchmark=ct``) also take ``data.root``, ``shard`` and
``num_shards`` (or run under ``torchrun``, one shard per rank).
"""

import inspect
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from invdiff.benchmarks import BENCHMARKS
from invdiff.fileio import atomic_write_text


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    params = OmegaConf.to_container(cfg.benchmark, resolve=True)
    name = params.pop("name")
    if name not in BENCHMARKS:
        raise ValueError(f"benchmark.name: expected one of {sorted(BENCHMARKS)}, got {name!r}")
    fn = BENCHMARKS[name]
    accepted = inspect.signature(fn).parameters
    if "data" in accepted:
        params["data"] = {**OmegaConf.to_container(cfg.data, resolve=True), "data_root": cfg.data_root}
    for key in ("shard", "num_shards"):
        if key in accepted:
            params[key] = cfg[key]
    report = fn(**params)
    print(report)
    if cfg.output:
        atomic_write_text(Path(hydra.utils.to_absolute_path(cfg.output)), report + "\n")


if __name__ == "__main__":
    main()
