"""Run a benchmark and print its table: ``python scripts/benchmark.py benchmark=operators``."""

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
    report = BENCHMARKS[name](**params)
    print(report)
    if cfg.output:
        path = Path(hydra.utils.to_absolute_path(cfg.output))
        atomic_write_text(path, report + "\n")


if __name__ == "__main__":
    main()
