"""Simulated tasks over their held-out test images: a sampler against the task's baseline.

For each case (a task's problem factory, its prior and a sampler, built by
``scripts/benchmark.py`` from the task's default config), the method and the baseline run on test
images ``0 .. count - 1`` (seed 0) through :func:`invdiff.run.reconstruct`; PSNR, SSIM and NMSE
are averaged per method, with the PSNR gain over the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from invdiff.benchmarks.common import markdown_table
from invdiff.priors.base import Denoiser
from invdiff.problems.base import Problem
from invdiff.run import Method, reconstruct

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


@dataclass
class Case:
    """One row of the table: ``problem(index=i)`` builds test problem ``i``."""

    task: str
    problem: Callable[..., Problem]
    prior: Denoiser
    method: Method
    count: int


def case_row(case: Case) -> dict:
    """The method and the baseline on the case's test images, averaged."""
    results = [reconstruct(case.problem(index=i), case.prior, case.method, seed=0).metrics for i in range(case.count)]
    rec = {k: np.mean([r["reconstruction"][k] for r in results]) for k in ("psnr", "ssim")}
    base = {k: np.mean([r["baseline_metrics"][k] for r in results]) for k in ("psnr", "ssim")}
    return {
        "task": case.task, "images": case.count, "baseline": results[0]["baseline"], "baseline_psnr": base["psnr"],
        "baseline_ssim": base["ssim"], "sampler": f"{case.method.name} ({results[0]['nfe']} NFE)",
        "psnr": rec["psnr"], "ssim": rec["ssim"], "gain": rec["psnr"] - base["psnr"],
        "seconds": float(np.mean([r["seconds"] for r in results])),
    }


def reconstruction_benchmark(*, cases: Sequence[Case], threads: int) -> str:
    """The markdown table of :func:`case_row` over ``cases``."""
    torch.set_num_threads(threads)
    return "\n".join([
        "### Default tasks on held-out test images (mean over images; seed 0)",
        "",
        markdown_table([case_row(case) for case in cases], COLUMNS),
    ])
