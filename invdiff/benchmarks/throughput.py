r"""Seconds and peak memory per slice at the size of real fastMRI data.

The data are generated brain volumes in fastMRI's geometry (:func:`invdiff.data.datasets.mri_brain_fastmri`
with ``size`` 320 and ``width`` 372: 640 x 372 k-space with a 2x readout, 320 x 320 targets;
``coils`` coils). Each case runs in a fresh interpreter on ``slice_batch`` slices of one volume at
4x (fastMRI's equispaced mask): it builds the problem from the file (:func:`invdiff.problems.fastmri.fastmri_problem`:
the ACS estimates of scale and noise, ESPIRiT maps of the ACS lines of each slice; the column
``prepare``) and runs the method through :func:`invdiff.run.run_method` (``method``). Peak memory
is the resident memory above the level after loading the prior, over both. Per slice is the
case's time divided by ``slice_batch``; per NFE the method's time divided by its network
evaluations and ``slice_batch``.

Priors are factories (``_partial_`` configs): the shipped ``mri_brain_64`` (convolutional, run at
320 x 376), and :func:`random_adm`, an ADM network of DDS's fastMRI architecture with random
weights (the cost of a forward pass does not depend on the weights), run at 320 x 384 (its
multiple is 32).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from invdiff.benchmarks.common import MALLOC_ENV, PeakMemory, markdown_table, run_isolated
from invdiff.priors.base import Denoiser

COLUMNS = [
    ("case", "case", "s"),
    ("slice_batch", "slice_batch", "d"),
    ("nfe", "NFE", "d"),
    ("prepare_s", "prepare s / slice", ".1f"),
    ("method_s", "method s / slice", ".1f"),
    ("per_nfe_s", "s / NFE / slice", ".2f"),
    ("peak_mib", "peak memory (MiB)", ".0f"),
]


def random_adm(config: str = "dds_fastmri_320", seed: int = 0, overrides: dict | None = None) -> Denoiser:
    """An ADM network of ``config``'s architecture with random weights (seeded), as a VP ε-denoiser
    the way :func:`invdiff.priors.checkpoints.load_adm` wraps a checkpoint; ``overrides`` replace
    entries of the architecture (e.g. a narrow network for tests)."""
    from invdiff.priors.adm import ADM_CONFIGS, ADMUNet
    from invdiff.priors.checkpoints import adm_denoiser

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # only the random weights; nothing downstream draws from it
        net = ADMUNet(**{**ADM_CONFIGS[config], **(overrides or {})})
    denoiser = adm_denoiser(net)
    denoiser.source = f"random weights, ADM {config}"
    return denoiser


def case_row(*, name: str, path: str, method: dict, prior: Callable[[], Denoiser] | None, slice_batch: int,
             threads: int) -> dict:
    """One case in this process: problem from the file, then the method; times and peak memory."""
    from invdiff.problems.fastmri import fastmri_problem
    from invdiff.run import Method, run_method

    torch.set_num_threads(threads)
    built = Method.from_config(name, method, where=f"benchmark.cases.{name}")
    denoiser = prior() if prior is not None else None
    with PeakMemory() as peak:
        start = time.perf_counter()
        problem = fastmri_problem(path, list(range(slice_batch)), acceleration=4)
        prepare = time.perf_counter() - start
        _, info = run_method(built, problem, denoiser, generator=torch.Generator().manual_seed(0))
    nfe = info["nfe"]
    return {"case": name, "slice_batch": slice_batch, "nfe": nfe, "prepare_s": prepare / slice_batch,
            "method_s": info["seconds"] / slice_batch,
            "per_nfe_s": info["seconds"] / (nfe * slice_batch) if nfe else None, "peak_mib": peak.peak_mib,
            "x_shape": problem.x_shape}


def throughput_benchmark(*, data: dict, size: int, width: int, coils: int, cases: list[dict], threads: int) -> str:
    """Every case (``{name, method, prior, slice_batch}``) in a fresh interpreter; the markdown table."""
    from invdiff.data.datasets import mri_brain_fastmri

    root = data.get("root")
    folder = Path(root) if root is not None else mri_brain_fastmri(
        data.get("data_root", "data"), size=size, width=width, coils=coils, slab=4)
    path = str(sorted(folder.glob("*.h5"))[0])
    rows = [run_isolated(case_row, env=MALLOC_ENV, name=case["name"], path=path, method=dict(case["method"]),
                         prior=case.get("prior"), slice_batch=int(case.get("slice_batch", 1)), threads=threads)
            for case in cases]
    shape = rows[0]["x_shape"]
    return "\n".join([
        f"### Seconds and peak memory per slice: {coils} coils, {2 * size} x {width} k-space, {size} x {size} "
        f"targets, 4x (unknown {shape[2]} x {shape[3]}), {threads} threads",
        "",
        markdown_table(rows, COLUMNS),
        "",
        f"Data: `{path}`. The shipped prior runs at {shape[2]} x {-(-shape[3] // 8) * 8}, the ADM network at "
        f"{-(-shape[2] // 32) * 32} x {-(-shape[3] // 32) * 32}.",
    ])
