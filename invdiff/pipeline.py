"""Reconstruction runs: sample, score against the ground truth and a baseline, save.

:func:`reconstruct` takes typed objects (a :class:`~invdiff.tasks.Task`, a denoiser, a sampler
name, a schedule) and returns a :class:`Result`; :func:`save_result` writes it into a run
directory. ``scripts/reconstruct.py`` only turns the Hydra config into those objects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from invdiff.fileio import atomic_write
from invdiff.metrics import METRICS
from invdiff.priors.base import Denoiser
from invdiff.samplers import BASELINES, get_sampler
from invdiff.tasks import Task

OUTPUTS = ("reconstruction.npy", "baseline.npy", "metrics.json", "figure.png", "config.yaml")
"""The files a run writes; a directory holding any of them is not written over silently."""


@dataclass
class Result:
    """A finished run: images in the prior's representation and their scores."""

    x_hat: Tensor
    x_baseline: Tensor
    metrics: dict
    info: dict


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def score(task: Task, x: Tensor) -> dict[str, float]:
    """PSNR, SSIM and NMSE of ``x`` against the ground truth, on the display images."""
    gt, pred = task.image(task.x_true).cpu(), task.image(x.detach()).cpu()
    return {name: fn(gt, pred) for name, fn in METRICS.items()}


def reconstruct(
    task: Task,
    denoiser: Denoiser,
    sampler: str,
    sigmas: Tensor,
    *,
    seed: int,
    device: torch.device,
    params: dict | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Result:
    """Run ``sampler`` on ``task`` with ``denoiser`` as the prior, and its baseline beside it.

    Args:
        task: the problem.
        denoiser: the prior, ``D(x, sigma)``.
        sampler: a name in ``invdiff.samplers.SAMPLERS``.
        sigmas: the noise schedule, descending, ending with 0.
        seed: seeds the sampler's generator; the same seed gives the same output on the CPU.
        device: where to run.
        params: the sampler's hyperparameters.
        callback: called after every step with the sampler's step dictionary.
    """
    if not torch.isfinite(task.y).all():
        raise ValueError(f"y: the {task.name} measurement holds NaN or infinite values")
    sample = get_sampler(sampler)
    op, y = task.op.to(device=device), task.y.to(device)
    denoiser = denoiser.to(device)
    generator = torch.Generator(device).manual_seed(seed)
    start = time.perf_counter()
    x_hat, info = sample(
        denoiser, op, y, sigmas.to(device), noise_std=task.noise_std, generator=generator,
        shape=tuple(task.x_true.shape), callback=callback, **(params or {}),
    )
    info = {**info, "seconds": info.get("seconds", time.perf_counter() - start)}
    x_baseline, _ = BASELINES[task.baseline](op, y, **task.baseline_kwargs)
    x_hat, x_baseline = x_hat.detach().cpu(), x_baseline.detach().cpu()
    metrics = {
        "task": task.name,
        "sampler": sampler,
        "baseline": task.baseline,
        "reconstruction": score(task, x_hat),
        "baseline_metrics": score(task, x_baseline),
        "nfe": int(info["nfe"]),
        "seconds": float(info["seconds"]),
        "seed": seed,
        "device": str(device),
    }
    return Result(x_hat, x_baseline, metrics, info)


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a directory that already holds a run's outputs unless ``overwrite``."""
    existing = [name for name in OUTPUTS if (run_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{run_dir}: already holds {', '.join(existing)}; choose another hydra.run.dir or pass overwrite=true"
        )


def save_result(result: Result, task: Task, run_dir: Path, config_yaml: str) -> None:
    """Write reconstruction, baseline, metrics, figure and resolved config into ``run_dir``."""
    from invdiff.figures import comparison_figure

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "reconstruction.npy", lambda p: np.save(p.open("wb"), task.array(result.x_hat)))
    atomic_write(run_dir / "baseline.npy", lambda p: np.save(p.open("wb"), task.array(result.x_baseline)))
    atomic_write(run_dir / "metrics.json", lambda p: p.write_text(json.dumps(result.metrics, indent=2) + "\n"))
    atomic_write(run_dir / "config.yaml", lambda p: p.write_text(config_yaml))
    middle = task.x_true.shape[0] // 2  # the middle slice of a volume, the image of a 2D task
    images = [task.image(t)[middle] for t in (task.x_true, result.x_baseline, result.x_hat)]
    atomic_write(
        run_dir / "figure.png",
        lambda p: comparison_figure(
            *images,
            titles=("ground truth", task.baseline, result.metrics["sampler"]),
            scores=(result.metrics["baseline_metrics"], result.metrics["reconstruction"]),
            path=p,
        ),
    )
