"""DiffusionMBIR on the volume tasks: quality against slice-by-slice DDS and the classical
baseline, and the network's peak memory as a function of ``slice_batch``.

Quality: each case (a volume task with its arguments) runs the task's baseline, DDS slice by
slice (no coupling along z), DiffusionMBIR in the paper's form (ADMM-TV on the noisy state, one
CG step, ancestral steps) and in DDS's decomposed form (ADMM-TV from the Tweedie estimate, 5 CG
steps), all with the task's default prior, the same schedule and seed 0. PSNR and SSIM are over
the whole volume (SSIM per slice, averaged); ``TV-z`` is the mean absolute difference between
neighbouring slices of the output (the truth's is in the case's first row).

Memory: DiffusionMBIR for a few steps on one volume at several ``slice_batch`` values, each in
a fresh interpreter; peak resident memory above the level after loading prior and task, and
the wall time per step.
"""

from __future__ import annotations

import time

import torch

from invdiff.benchmarks.common import MALLOC_ENV, PeakMemory, markdown_table, run_isolated

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


def _problem(task: str, kwargs: dict, data_root: str):
    from invdiff import tasks3d
    from invdiff.priors.packaged import load_packaged
    from invdiff.priors.phantom import phantom_gaussian

    built = getattr(tasks3d, task)(**kwargs)
    if task == "ct3d":
        prior = phantom_gaussian(built.x_true.shape[-1], cache_dir=f"{data_root}/priors")
    else:
        prior = load_packaged("mri_brain_64")
    return built, prior


def _tv_z(task, x: torch.Tensor) -> float:
    image = task.image(x)
    return float((image[1:] - image[:-1]).abs().mean())


def quality_case(*, task: str, kwargs: dict, steps: int, methods: list[str], mbir_params: dict, threads: int,
                 data_root: str) -> list[dict]:
    """Baseline and ``methods`` on one volume task; one row per method."""
    from invdiff.pipeline import score
    from invdiff.samplers import BASELINES, SAMPLERS
    from invdiff.schedules import sigmas_vp

    torch.set_num_threads(threads)
    problem, prior = _problem(task, kwargs, data_root)
    label = f"{task} " + ", ".join(f"{k}={v}" for k, v in kwargs.items())
    start = time.perf_counter()
    x_base, _ = BASELINES[problem.baseline](problem.op, problem.y, **problem.baseline_kwargs)
    rows = [{"case": label, "method": problem.baseline, "nfe": 0, **score(problem, x_base),
             "seconds": time.perf_counter() - start, "tv_z": _tv_z(problem, x_base),
             "tv_z_true": _tv_z(problem, problem.x_true)}]
    sigmas = sigmas_vp(steps)
    for method in methods:
        name, params = METHODS[method]
        params = {**mbir_params, **params} if name == "diffusion_mbir" else params
        start = time.perf_counter()
        x, info = SAMPLERS[name](prior, problem.op, problem.y, sigmas, noise_std=problem.noise_std,
                                 generator=torch.Generator().manual_seed(0), shape=tuple(problem.x_true.shape),
                                 **params)
        rows.append({"case": label, "method": LABELS[method], "nfe": info["nfe"], **score(problem, x),
                     "seconds": time.perf_counter() - start, "tv_z": _tv_z(problem, x)})
    return rows


def memory_case(*, task: str, kwargs: dict, steps: int, slice_batch: int, mbir_params: dict, threads: int,
                data_root: str) -> dict:
    """Peak memory and time per step of DiffusionMBIR at one ``slice_batch``."""
    from invdiff.samplers import sample_diffusion_mbir
    from invdiff.schedules import sigmas_vp

    torch.set_num_threads(threads)
    problem, prior = _problem(task, kwargs, data_root)
    params = {**mbir_params, **METHODS["mbir_decomposed"][1], "slice_batch": slice_batch}
    with PeakMemory() as peak:
        start = time.perf_counter()
        _, info = sample_diffusion_mbir(prior, problem.op, problem.y, sigmas_vp(steps), noise_std=problem.noise_std,
                                        generator=torch.Generator().manual_seed(0),
                                        shape=tuple(problem.x_true.shape), **params)
        seconds = time.perf_counter() - start
    return {"slice_batch": slice_batch, "slices": problem.x_true.shape[0], "peak_mib": peak.peak_mib,
            "step_s": seconds / info["nfe"]}


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


def mbir_benchmark(*, cases: list[dict], memory: dict, mbir_params: dict, threads: int, data_root: str) -> str:
    """``cases``: ``{task, kwargs, steps, methods}``; ``memory``: ``{task, kwargs, steps, slice_batches}``."""
    rows, notes = [], []
    for case in cases:
        case_rows = run_isolated(quality_case, task=case["task"], kwargs=dict(case.get("kwargs", {})),
                                 steps=case["steps"], methods=list(case["methods"]), mbir_params=mbir_params,
                                 threads=threads, data_root=data_root)
        notes.append(f"- {case_rows[0]['case']}: {case['steps']} steps; true TV-z {case_rows[0]['tv_z_true']:.4f}")
        rows += case_rows
    memory_rows = [
        run_isolated(memory_case, env=MALLOC_ENV, task=memory["task"], kwargs=dict(memory.get("kwargs", {})),
                     steps=memory["steps"], slice_batch=b, mbir_params=mbir_params, threads=threads,
                     data_root=data_root)
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
