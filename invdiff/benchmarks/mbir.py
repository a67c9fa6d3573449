"""DiffusionMBIR on the volume tasks: quality against slice-by-slice DDS and the classical
baseline, and the network's peak memory as a function of ``slice_batch``.

Quality: each case (a volume task with its arguments and a prior, given by the config as a
factory) runs the task's baseline, DDS slice by slice (no coupling along z), DiffusionMBIR in the
paper's form (ADMM-TV on the noisy state, one CG step, ancestral steps) and in DDS's decomposed
form (ADMM-TV from the Tweedie estimate, 5 CG steps), all with the case's prior, the VP schedule
and seed 0, through :func:`invdiff.run.run_method`. PSNR and SSIM are over
the whole volume (SSIM per slice, averaged); ``TV-z`` is the mean absolute difference between
neighbouring slices of the output (the truth's is in the case's first row).

Memory: DiffusionMBIR for a few steps on one volume at several ``slice_batch`` values, each in
a fresh interpreter; peak resident memory above the level after loading prior and task, and
the wall time per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.benchmarks.common import MALLOC_ENV, PeakMemory, markdown_table, run_isolated
from invdiff.priors.base import Denoiser
from invdiff.problems import PROBLEMS
from invdiff.run import Method, baseline_method, run_method

METHODS = {
    "dds": ("dds", {}),
    "mbir_paper": ("diffusion_mbir", {"decomposed": False, "eta": 1.0, "admm_cg": 1}),
    "mbir_decomposed": ("diffusion_mbir", {"decomposed": True, "eta": 0.85, "admm_cg": 5}),
}
"""Method names of the config: sampler name and its parameters (on top of ``mbir_params``)."""

LABELS = {
    "dds": "DDS, slice by slice",
    "mbir_paper": "DiffusionMBIR (paper form)",
    "mbir_decomposed": "DiffusionMBIR (decomposed)",
}


def _tv_z(problem, x: torch.Tensor) -> float:
    image = problem.image(x)
    return float((image[1:] - image[:-1]).abs().mean())


def _method(name: str, steps: int, mbir_params: dict) -> Method:
    sampler, params = METHODS[name]
    params = {**mbir_params, **params} if sampler == "diffusion_mbir" else params
    return Method(name, sampler=sampler, steps=steps, params=params, where=f"benchmark.cases.{name}")


def quality_case(*, task: str, kwargs: dict, prior: Callable[[], Denoiser], steps: int, methods: list[str],
                 mbir_params: dict, threads: int) -> list[dict]:
    """Baseline and ``methods`` on one volume task; one row per method."""
    torch.set_num_threads(threads)
    problem, denoiser = PROBLEMS[task](**kwargs), prior()
    label = f"{task} " + ", ".join(f"{k}={v}" for k, v in kwargs.items())
    x_base, info = run_method(baseline_method(problem), problem, generator=torch.Generator().manual_seed(0))
    rows = [{"case": label, "method": problem.baseline, "nfe": 0, **problem.score(x_base),
             "seconds": info["seconds"], "tv_z": _tv_z(problem, x_base), "tv_z_true": _tv_z(problem, problem.x_true)}]
    for name in methods:
        x, info = run_method(_method(name, steps, mbir_params), problem, denoiser,
                             generator=torch.Generator().manual_seed(0))
        rows.append({"case": label, "method": LABELS[name], "nfe": info["nfe"], **problem.score(x),
                     "seconds": info["seconds"], "tv_z": _tv_z(problem, x)})
    return rows


def memory_case(*, task: str, kwargs: dict, prior: Callable[[], Denoiser], steps: int, slice_batch: int,
                mbir_params: dict, threads: int) -> dict:
    """Peak memory and time per step of DiffusionMBIR at one ``slice_batch``."""
    torch.set_num_threads(threads)
    problem, denoiser = PROBLEMS[task](**kwargs), prior()
    method = _method("mbir_decomposed", steps, {**mbir_params, "slice_batch": slice_batch})
    with PeakMemory() as peak:
        _, info = run_method(method, problem, denoiser, generator=torch.Generator().manual_seed(0))
    return {"slice_batch": slice_batch, "slices": problem.batch, "peak_mib": peak.peak_mib,
            "step_s": info["seconds"] / info["nfe"]}


QUALITY_COLUMNS = [
    ("case", "case", "s"),
    ("method", "method", "s"),
    ("nfe", "NFE", "d"),
    ("psnr", "PSNR", ".2f"),
    ("ssim", "SSIM", ".3f"),
    ("tv_z", "TV-z", ".4f"),
    ("seconds", "seconds", ".1f"),
]
MEMORY_COLUMNS = [
    ("slice_batch", "slice_batch", "d"),
    ("slices", "slices", "d"),
    ("peak_mib", "peak memory (MiB)", ".0f"),
    ("step_s", "s / step", ".2f"),
]


def mbir_benchmark(*, cases: list[dict], memory: dict, mbir_params: dict, threads: int) -> str:
    """``cases``: ``{task, kwargs, prior, steps, methods}``; ``memory``: ``{task, kwargs, prior, steps,
    slice_batches}``; each ``prior`` a factory of the case's denoiser (a picklable callable)."""
    rows, notes = [], []
    for case in cases:
        case_rows = run_isolated(quality_case, task=case["task"], kwargs=dict(case.get("kwargs", {})),
                                 prior=case["prior"], steps=case["steps"], methods=list(case["methods"]),
                                 mbir_params=mbir_params, threads=threads)
        notes.append(f"- {case_rows[0]['case']}: {case['steps']} steps; true TV-z {case_rows[0]['tv_z_true']:.4f}")
        rows += case_rows
    memory_rows = [
        run_isolated(memory_case, env=MALLOC_ENV, task=memory["task"], kwargs=dict(memory.get("kwargs", {})),
                     prior=memory["prior"], steps=memory["steps"], slice_batch=b, mbir_params=mbir_params,
                     threads=threads)
        for b in memory["slice_batches"]
    ]
    params = ", ".join(f"{k}={v}" for k, v in mbir_params.items())
    return "\n".join([
        f"### DiffusionMBIR on volumes (seed 0, {threads} threads; {params})",
        "",
        markdown_table(rows, QUALITY_COLUMNS),
        "",
        *notes,
        "",
        f"### Peak memory against slice_batch ({memory['task']}, decomposed form, {memory['steps']} steps)",
        "",
        markdown_table(memory_rows, MEMORY_COLUMNS),
    ])
