"""DiffusionMBIR on the volume tasks: quality against slice-by-slice DDS and the classical
baseline, with the TV weight ``lam`` chosen on held-out volumes, and the network's peak memory as
a function of ``slice_batch``.

Quality: each case (a volume task with its arguments and a prior, given by the config as a
factory) names *tuning* volumes and *evaluation* volumes (task arguments such as ``index`` or
``seed``/``contrast``), which must be disjoint. For every method with a TV weight, ``lam`` is
scanned over ``lams`` on the tuning volumes only (mean PSNR); the chosen value then runs on the
evaluation volumes, and only those are reported as the result. The methods: the task's
baseline, DDS slice by slice (no coupling along z), DiffusionMBIR in the paper's
predictor-corrector form (``diffusion_mbir_paper``), at one NFE per step (``diffusion_mbir``) and
DDS's 3D form (``dds3d``), each with the case's prior, its schedule and seed 0, through
:func:`invdiff.run.run_method`. PSNR and SSIM are over the whole volume (SSIM per slice,
averaged); ``TV-z`` is the mean absolute difference between neighbouring slices of the output.

Memory: DDS-3D for a few steps on one volume at several ``slice_batch`` values, each in a fresh
interpreter; peak resident memory above the level after loading prior and task, and the wall
time per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.benchmarks.common import MALLOC_ENV, PeakMemory, markdown_table, run_isolated
from invdiff.priors.base import Denoiser
from invdiff.problems import PROBLEMS
from invdiff.run import Method, baseline_method, run_method

METHODS = {
    "dds": ("dds", "vp", {}),
    "diffusion_mbir_paper": ("diffusion_mbir_paper", "loglinear", {"slice_batch": 12}),
    "diffusion_mbir": ("diffusion_mbir", "vp", {"eta": 1.0, "admm_cg": 1}),
    "dds3d": ("dds3d", "vp", {"eta": 0.85, "admm_cg": 5}),
}
"""Method names of the config: sampler name, schedule and parameters (on top of ``mbir_params``)."""

TV_SAMPLERS = {"diffusion_mbir_paper", "diffusion_mbir", "dds3d"}
"""Samplers with a TV weight ``lam`` (scanned on the tuning volumes)."""

LABELS = {
    "dds": "DDS, slice by slice",
    "diffusion_mbir_paper": "DiffusionMBIR, paper form (PC)",
    "diffusion_mbir": "DiffusionMBIR, 1 NFE/step",
    "dds3d": "DDS-3D",
}


def _tv_z(problem, x: torch.Tensor) -> float:
    image = problem.image(x)
    return float((image[1:] - image[:-1]).abs().mean())


def _method(name: str, steps: int, mbir_params: dict, lam: float | None = None) -> Method:
    sampler, schedule, params = METHODS[name]
    if sampler in TV_SAMPLERS:
        params = {**mbir_params, **params, **({} if lam is None else {"lam": lam})}
    return Method(name, sampler=sampler, steps=steps, schedule=schedule, params=params,
                  where=f"benchmark.cases.methods.{name}")


def _volume_label(volume: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in volume.items()) or "default"


def check_disjoint(tune: list[dict], evaluate: list[dict]) -> None:
    """Raise a ``ValueError`` when a tuning volume is also an evaluation volume."""
    shared = [v for v in tune if v in evaluate]
    if shared:
        raise ValueError(f"benchmark.cases: tuning and evaluation volumes overlap: {shared}; lam must be chosen on "
                         f"held-out volumes")
    if not evaluate:
        raise ValueError("benchmark.cases: no evaluation volumes")


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def quality_case(*, task: str, kwargs: dict, tune: list[dict], evaluate: list[dict],
                 prior: Callable[[], Denoiser], methods: dict[str, int], lams: list[float], mbir_params: dict,
                 threads: int) -> dict:
    """Baseline and ``methods`` (name to steps) on one volume task: ``lam`` scanned on the ``tune``
    volumes, results on the ``evaluate`` volumes. Returns ``{"rows", "scan", "tv_z_true"}``."""
    check_disjoint(tune, evaluate)
    torch.set_num_threads(threads)
    denoiser = prior()
    problems = {}

    def problem_of(volume: dict):
        key = tuple(sorted(volume.items()))
        if key not in problems:
            problems[key] = PROBLEMS[task](**kwargs, **volume)
        return problems[key]

    def run(method: Method, volume: dict) -> dict:
        problem = problem_of(volume)
        x, info = run_method(method, problem, denoiser, generator=torch.Generator().manual_seed(0))
        return {**problem.score(x), "nfe": info["nfe"], "seconds": info["seconds"], "tv_z": _tv_z(problem, x)}

    label = f"{task} " + ", ".join(f"{k}={v}" for k, v in kwargs.items())
    tuning, evaluation = "; ".join(map(_volume_label, tune)), "; ".join(map(_volume_label, evaluate))
    base = []
    for volume in evaluate:
        problem = problem_of(volume)
        x, info = run_method(baseline_method(problem), problem, generator=torch.Generator().manual_seed(0))
        base.append({**problem.score(x), "seconds": info["seconds"], "tv_z": _tv_z(problem, x)})
    rows = [{"case": label, "method": problem_of(evaluate[0]).baseline, "nfe": 0, "tuning": "", "evaluation": evaluation,
             "psnr": _mean(base, "psnr"), "ssim": _mean(base, "ssim"), "tv_z": _mean(base, "tv_z"),
             "seconds": _mean(base, "seconds")}]
    scan = []
    for name, steps in methods.items():
        lam = None
        if METHODS[name][0] in TV_SAMPLERS:
            # 1. lam on the tuning volumes only.
            for value in lams:
                tuned = [run(_method(name, steps, mbir_params, value), volume) for volume in tune]
                scan.append({"case": label, "method": LABELS[name], "lam": value, "tuning": tuning,
                             "psnr": _mean(tuned, "psnr"), "ssim": _mean(tuned, "ssim")})
            best = max((s for s in scan if s["case"] == label and s["method"] == LABELS[name]), key=lambda s: s["psnr"])
            lam, tune_psnr = best["lam"], best["psnr"]
        # 2. The evaluation volumes, with the chosen lam.
        result = [run(_method(name, steps, mbir_params, lam), volume) for volume in evaluate]
        rows.append({"case": label, "method": LABELS[name], "nfe": result[0]["nfe"], "lam": lam,
                     "tuning": tuning if lam is not None else "", "tune_psnr": tune_psnr if lam is not None else None,
                     "evaluation": evaluation, "psnr": _mean(result, "psnr"), "ssim": _mean(result, "ssim"),
                     "tv_z": _mean(result, "tv_z"), "seconds": _mean(result, "seconds")})
    tv_z_true = _mean([{"t": _tv_z(problem_of(v), problem_of(v).x_true)} for v in evaluate], "t")
    return {"rows": rows, "scan": scan, "tv_z_true": tv_z_true}


def memory_case(*, task: str, kwargs: dict, prior: Callable[[], Denoiser], steps: int, slice_batch: int,
                mbir_params: dict, threads: int) -> dict:
    """Peak memory and time per step of DDS-3D at one ``slice_batch``."""
    torch.set_num_threads(threads)
    problem, denoiser = PROBLEMS[task](**kwargs), prior()
    method = _method("dds3d", steps, {**mbir_params, "slice_batch": slice_batch})
    with PeakMemory() as peak:
        _, info = run_method(method, problem, denoiser, generator=torch.Generator().manual_seed(0))
    return {"slice_batch": slice_batch, "slices": problem.batch, "peak_mib": peak.peak_mib,
            "step_s": info["seconds"] / info["nfe"]}


QUALITY_COLUMNS = [
    ("case", "case", "s"),
    ("method", "method", "s"),
    ("nfe", "NFE", "d"),
    ("lam", "lam (chosen)", ".0e"),
    ("tuning", "tuning volumes", "s"),
    ("tune_psnr", "tuning PSNR", ".2f"),
    ("evaluation", "evaluation volumes", "s"),
    ("psnr", "PSNR", ".2f"),
    ("ssim", "SSIM", ".3f"),
    ("tv_z", "TV-z", ".4f"),
    ("seconds", "seconds", ".1f"),
]
SCAN_COLUMNS = [
    ("case", "case", "s"),
    ("method", "method", "s"),
    ("lam", "lam", ".0e"),
    ("tuning", "tuning volumes", "s"),
    ("psnr", "PSNR", ".2f"),
    ("ssim", "SSIM", ".3f"),
]
MEMORY_COLUMNS = [
    ("slice_batch", "slice_batch", "d"),
    ("slices", "slices", "d"),
    ("peak_mib", "peak memory (MiB)", ".0f"),
    ("step_s", "s / step", ".2f"),
]


def mbir_benchmark(*, cases: list[dict], memory: dict | None, mbir_params: dict, lams: list[float],
                   threads: int) -> str:
    """``cases``: ``{task, kwargs, prior, tune, evaluate, methods}`` (``methods``: name to steps;
    ``tune``, ``evaluate``: lists of task arguments picking the volumes); ``memory``: ``{task,
    kwargs, prior, steps, slice_batches}`` or ``None``; each ``prior`` a factory of the case's
    denoiser (a picklable callable); ``lams``: the scan of the TV weight on the tuning volumes."""
    rows, scan, notes = [], [], []
    for case in cases:
        tune, evaluate = [dict(v) for v in case["tune"]], [dict(v) for v in case["evaluate"]]
        check_disjoint(tune, evaluate)
        out = run_isolated(quality_case, task=case["task"], kwargs=dict(case.get("kwargs", {})), tune=tune,
                           evaluate=evaluate, prior=case["prior"], methods=dict(case["methods"]),
                           lams=list(lams), mbir_params=mbir_params, threads=threads)
        notes.append(f"- {out['rows'][0]['case']}: true TV-z of the evaluation volumes {out['tv_z_true']:.4f}")
        rows += out["rows"]
        scan += out["scan"]
    params = ", ".join(f"{k}={v}" for k, v in mbir_params.items())
    parts = [
        f"### DiffusionMBIR on volumes (seed 0, {threads} threads; {params}; lam scanned over "
        f"{', '.join(f'{v:g}' for v in lams)} on the tuning volumes, reported on the evaluation volumes)",
        "",
        markdown_table(rows, QUALITY_COLUMNS),
        "",
        *notes,
        "",
        "### lam scan (tuning volumes only)",
        "",
        markdown_table(scan, SCAN_COLUMNS),
    ]
    if memory:
        memory_rows = [
            run_isolated(memory_case, env=MALLOC_ENV, task=memory["task"], kwargs=dict(memory.get("kwargs", {})),
                         prior=memory["prior"], steps=memory["steps"], slice_batch=b, mbir_params=mbir_params,
                         threads=threads)
            for b in memory["slice_batches"]
        ]
        parts += ["", f"### Peak memory against slice_batch ({memory['task']}, DDS-3D, {memory['steps']} steps)", "",
                  markdown_table(memory_rows, MEMORY_COLUMNS)]
    return "\n".join(parts)
