"""Reconstruct one task with one sampler: ``python scripts/reconstruct.py task=mri sampler=dds``.

Writes into the run directory: ``reconstruction.npy``, ``baseline.npy``, ``metrics.json``,
``figure.png`` and the resolved ``config.yaml``.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from invdiff.pipeline import check_run_dir, reconstruct, resolve_device, save_result
from invdiff.schedules import make_sigmas


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    check_run_dir(run_dir, cfg.overwrite)
    task = instantiate(cfg.task)
    prior = instantiate(cfg.prior)
    sigmas = make_sigmas(
        cfg.sampler.schedule, cfg.sampler.steps, sigma_min=prior.sigma_min, sigma_max=prior.sigma_max,
        **cfg.sampler.schedule_params,
    )
    with tqdm(total=len(sigmas) - 1, desc=f"{cfg.sampler.name} on {task.name}", disable=not cfg.progress) as bar:
        result = reconstruct(
            task, prior, cfg.sampler.name, sigmas, seed=cfg.seed, device=resolve_device(cfg.device),
            params=OmegaConf.to_container(cfg.sampler.params), callback=lambda _: bar.update(1),
        )
    save_result(result, task, run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    rec, base = result.metrics["reconstruction"], result.metrics["baseline_metrics"]
    print(
        f"{task.name}: {cfg.sampler.name} PSNR {rec['psnr']:.2f} dB SSIM {rec['ssim']:.3f} | "
        f"{task.baseline} PSNR {base['psnr']:.2f} dB SSIM {base['ssim']:.3f} | "
        f"{result.metrics['nfe']} NFE, {result.metrics['seconds']:.1f} s -> {run_dir}"
    )


if __name__ == "__main__":
    main()
