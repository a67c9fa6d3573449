"""Default tasks over their held-out test images: a sampler against the task's baseline.

For each task, the config's default prior and sampler run on test images ``0 .. count - 1``
(seed 0); PSNR, SSIM and NMSE are averaged per method, with the PSNR gain over the baseline.
"""

from __future__ import annotations

import numpy as np
import torch

from invdiff.benchmarks.common import markdown_table

COLUMNS = [
    ("task", "task", "s"),
    ("images", "test images", "d"),
    ("baseline", "baseline", "s"),
    ("baseline_psnr", "PSNR", ".2f"),
    ("baseline_ssim", "SSIM", ".3f"),
    ("sampler", "sampler", "s"),
    ("psnr", "PSNR", ".2f"),
    ("ssim", "SSIM", ".3f"),
    ("gain", "PSNR gain (dB)", ".2f"),
    ("seconds", "s / image", ".1f"),
]


def _task_rows(task: str, count: int, steps: int, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from invdiff.benchmarks.samplers import ROOT
    from invdiff.pipeline import reconstruct
    from invdiff.schedules import make_sigmas

    overrides = [f"task={task}", f"sampler.steps={steps}", *overrides]
    if GlobalHydra.instance().is_initialized():  # inside scripts/benchmark.py, same config folder
        cfg = compose(config_name="config", overrides=overrides)
    else:
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
            cfg = compose(config_name="config", overrides=overrides)
    prior = instantiate(cfg.prior)
    sigmas = make_sigmas(cfg.sampler.schedule, cfg.sampler.steps, sigma_min=prior.sigma_min,
                         sigma_max=prior.sigma_max, **cfg.sampler.schedule_params)
    params = OmegaConf.to_container(cfg.sampler.params)
    results = []
    for index in range(count):
        problem = instantiate(cfg.task, index=index)
        results.append(reconstruct(problem, prior, cfg.sampler.name, sigmas, seed=0, device=torch.device("cpu"),
                                   params=params).metrics)
    rec = {k: np.mean([r["reconstruction"][k] for r in results]) for k in ("psnr", "ssim")}
    base = {k: np.mean([r["baseline_metrics"][k] for r in results]) for k in ("psnr", "ssim")}
    return {
        "task": task, "images": count, "baseline": results[0]["baseline"], "baseline_psnr": base["psnr"],
        "baseline_ssim": base["ssim"], "sampler": f"{cfg.sampler.name} ({steps} NFE)", "psnr": rec["psnr"],
        "ssim": rec["ssim"], "gain": rec["psnr"] - base["psnr"],
        "seconds": float(np.mean([r["seconds"] for r in results])),
    }


def reconstruction_benchmark(*, tasks: dict[str, dict], threads: int) -> str:
    """``tasks`` maps task names to ``{count, steps, overrides}``."""
    torch.set_num_threads(threads)
    rows = [_task_rows(name, spec["count"], spec["steps"], list(spec.get("overrides", []))) for name, spec in tasks.items()]
    return "\n".join([
        "### Default tasks on held-out test images (mean over images; seed 0)",
        "",
        markdown_table(rows, COLUMNS),
    ])
