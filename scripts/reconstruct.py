"""Reconstruct one problem with one method: ``python scripts/reconstruct.py task=mri sampler=dds``.

Writes into the run directory: ``reconstruction.npy``, ``baseline.npy``, ``metrics.json``,
``figure.png`` and the resolved ``config.yaml``. ``task=fastmri task.file=<h5> task.slice=<k>``
reconstructs a slice of one's own fastMRI file (``task=ct task.image=<file>``, ``task=ct_sinogram
task.file=<file>``: one's own CT image or sinogram); without a reference in the file the
metrics are left out and the figure has no reference column.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from invdiff.run import Method, check_run_dir, reconstruct, save_result


def _describe(name: str, scores: dict | None) -> str:
    return name if scores is None else f"{name} PSNR {scores['psnr']:.2f} dB SSIM {scores['ssim']:.3f}"


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    check_run_dir(run_dir, cfg.overwrite)
    entry = OmegaConf.to_container(cfg.sampler, resolve=True)
    name = entry.pop("name")
    method = Method.from_config(name, {"sampler": name, **entry}, where="sampler")
    problem = instantiate(cfg.task)
    prior = instantiate(cfg.prior)
    with tqdm(total=method.steps, desc=f"{method.name} on {problem.name}", disable=not cfg.progress) as bar:
        result = reconstruct(problem, prior, method, seed=cfg.seed, device=cfg.device, precision=cfg.precision,
                             callback=lambda _: bar.update(1))
    save_result(result, problem, run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    m = result.metrics
    print(
        f"{problem.name}: {_describe(method.name, m['reconstruction'])} | {_describe(m['baseline'], m['baseline_metrics'])}"
        f" | {m['nfe']} NFE, {m['seconds']:.1f} s -> {run_dir}"
    )


if __name__ == "__main__":
    main()
