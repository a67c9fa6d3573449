r"""Fast unconditional ODE solvers on a prior with an exact answer: sliced Wasserstein at fixed NFE.

The prior is the 25-component Gaussian mixture of :mod:`invdiff.benchmarks.gmm`
(:func:`~invdiff.benchmarks.gmm.grid_mixture`: unit-covariance components on the grid
:math:`(8i, 8j, 8i, 8j, \dots)`, :math:`i, j \in \{-2, \dots, 2\}`, weights
:math:`\propto \epsilon_k^2`), whose denoiser is exact, so every difference from the prior is the
solver's discretisation error. Per ``(d, seed)``: ``num_samples`` exact prior samples are the
reference; each solver in ``run`` draws ``num_samples`` samples from the same start noise
:math:`x_T = \sigma_{max} z` on the EDM (Karras) schedule from ``sigma_max`` to ``sigma_min``
(then 0) at every NFE budget in ``nfe``, and its distance is the sliced Wasserstein distance
(:func:`invdiff.metrics.sliced_wasserstein`, ``p = 2``) to the reference. The *floor* is the same
distance for ``num_samples`` fresh exact samples (the mean of ``floor_repeats`` draws): what a
perfect sampler scores. All distances of a problem use the same projection directions.

The start :math:`\sigma_{max} z` ignores the prior's own spread and mean (the exact start is the
prior convolved with :math:`\mathcal N(0, \sigma_{max}^2 I)`), so even the exact ODE solution
from it misses the prior by a solver-independent amount: with :math:`\sigma_{max} = 80` and this
prior (per-coordinate mean about 5, spread about 11) it is most of the distance. Two further
numbers separate the solver's own error from it: the *ODE limit*, the same distance for a
``limit``-step solve from the same start noise (the converged solver), and each run's ``rmse``,
:math:`\sqrt{\operatorname{mean}_n \|x_n - x^{lim}_n\|^2 / d}`, its per-coordinate distance to
that limit, sample by sample (free of Monte Carlo error; the components have unit variance).

A budget is turned into steps by the solver's ``evaluations``: ``per_step`` (DDIM, DPM-Solver++(2M),
UniPC, DEIS: ``n`` steps cost ``n`` evaluations, the step into 0 included) or ``heun`` (EDM's Heun:
``2n - 1``, so the largest ``n`` with ``2n - 1 <= NFE``: 5 -> 3 steps (5), 10 -> 5 (9), 20 -> 10
(19), 50 -> 25 (49)). The NFE column is what the solver spent.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from invdiff.benchmarks.common import check_run_entry, markdown_table
from invdiff.benchmarks.gmm import grid_mixture
from invdiff.fileio import atomic_write, json_safe
from invdiff.metrics import sliced_wasserstein
from invdiff.priors.gmm import GaussianMixture
from invdiff.schedules import sigmas_karras

log = logging.getLogger(__name__)

EVALUATIONS = ("per_step", "heun")
CSV_FIELDS = ["d", "seed", "solver", "target_nfe", "steps", "nfe", "sw", "floor", "ratio", "rmse", "limit_sw",
              "limit_ratio", "seconds"]


def steps_for_nfe(nfe: int, evaluations: str) -> int:
    """The most steps whose cost fits ``nfe`` evaluations (module docstring)."""
    if evaluations == "heun":
        return max(1, (int(nfe) + 1) // 2)
    return int(nfe)


def check_solvers(solvers: dict[str, dict], run: Sequence[str], registry: dict) -> None:
    """Raise a ``ValueError`` before any work when an entry in ``run`` is unknown or malformed."""
    for name in run:
        entry = check_run_entry("solvers", "solvers", solvers, name, registry, "invdiff.samplers.UNCONDITIONAL")
        if entry.get("evaluations", "per_step") not in EVALUATIONS:
            raise ValueError(
                f"benchmark solvers: solvers.{name}.evaluations: expected one of {EVALUATIONS}, "
                f"got {entry.get('evaluations')!r}"
            )


def _seed(d: int, seed: int) -> int:
    return 1_000_003 * seed + 1_009 * d + 17


def evaluate_prior(
    prior: GaussianMixture,
    *,
    d: int,
    seed: int,
    solvers: dict[str, dict],
    run: Sequence[str],
    nfe: Sequence[int],
    num_samples: int,
    projections: int,
    floor_repeats: int,
    sigma_min: float,
    sigma_max: float,
    rho: float,
    limit: dict,
    p: int = 2,
) -> list[dict]:
    """Every solver in ``run`` at every budget in ``nfe`` on one prior: one row each (``CSV_FIELDS``)."""
    from invdiff.samplers import UNCONDITIONAL

    g = torch.Generator().manual_seed(_seed(d, seed))
    reference = prior.sample(num_samples, generator=g)
    sw_seed = _seed(d, seed) + 3

    def distance(x):
        return sliced_wasserstein(x, reference, projections=projections, p=p,
                                  generator=torch.Generator().manual_seed(sw_seed))

    floor = statistics.fmean(distance(prior.sample(num_samples, generator=g)) for _ in range(floor_repeats))

    def solve(sampler, steps, params):
        # the same start noise for every solver: paired comparisons
        return UNCONDITIONAL[sampler](
            prior, sigmas_karras(steps, sigma_min, sigma_max, rho), shape=(num_samples, *prior.shape),
            generator=torch.Generator().manual_seed(_seed(d, seed) + 11), **params,
        )

    x_limit, _ = solve(limit["sampler"], int(limit["steps"]), limit.get("params") or {})
    limit_sw = distance(x_limit)
    rows = []
    for name, target in itertools.product(run, nfe):
        entry = solvers[name]
        steps = steps_for_nfe(target, entry.get("evaluations", "per_step"))
        start = time.perf_counter()
        x, info = solve(entry.get("sampler", name), steps, entry.get("params") or {})
        seconds = time.perf_counter() - start
        sw = distance(x)
        rmse = float((x - x_limit).reshape(num_samples, -1).square().mean().sqrt())
        rows.append({"d": d, "seed": seed, "solver": name, "target_nfe": int(target), "steps": steps,
                     "nfe": info["nfe"], "sw": sw, "floor": floor, "ratio": sw / floor, "rmse": rmse,
                     "limit_sw": limit_sw, "limit_ratio": limit_sw / floor, "seconds": seconds})
        log.info("d=%d seed=%d %s NFE %d (%d steps): SW %.4g (floor %.4g, ODE limit %.4g), RMSE to the limit %.3g",
                 d, seed, name, info["nfe"], steps, sw, floor, limit_sw, rmse)
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Means over seeds per ``(solver, target NFE, d)``; ``ratio`` is the mean per-seed ratio."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["solver"], row["target_nfe"], row["d"]), []).append(row)
    return [
        {"solver": solver, "target_nfe": target, "d": d, "steps": group[0]["steps"],
         **{key: statistics.fmean(r[key] for r in group)
            for key in ("nfe", "sw", "floor", "ratio", "rmse", "limit_sw", "limit_ratio", "seconds")},
         "ratio_max": max(r["ratio"] for r in group), "seeds": len(group)}
        for (solver, target, d), group in groups.items()
    ]


def _csv_text(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in CSV_FIELDS} for row in rows)
    return buf.getvalue()


def pivot_table(summary: Sequence[dict], d: int, nfe: Sequence[int], limit_name: str) -> str:
    """Markdown: one row per solver, one column per NFE budget, cells ``SW (SW / floor); RMSE`` at ``d``."""
    rows = [r for r in summary if r["d"] == d]
    names = list(dict.fromkeys(r["solver"] for r in rows))
    by_key = {(r["solver"], r["target_nfe"]): r for r in rows}
    lines = ["| solver | " + " | ".join(f"NFE {n}" for n in nfe) + " |", "|---|" + "---:|" * len(nfe)]
    for name in names:
        cells = []
        for n in nfe:
            r = by_key.get((name, n))
            if r is None:
                cells.append("")
            else:
                spent = "" if round(r["nfe"]) == n else f" [{r['nfe']:.0f}]"
                cells.append(f"{r['sw']:.3f} ({r['ratio']:.2f}); {r['rmse']:.2g}{spent}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    floor = statistics.fmean(r["floor"] for r in rows)
    limit_sw = statistics.fmean(r["limit_sw"] for r in rows)
    limit_ratio = statistics.fmean(r["limit_ratio"] for r in rows)
    cell = f"{limit_sw:.3f} ({limit_ratio:.2f}); 0"
    lines.append(f"| ODE limit ({limit_name}) | " + " | ".join(cell for _ in nfe) + " |")
    lines.append("| exact samples (floor) | " + " | ".join(f"{floor:.3f} (1.00)" for _ in nfe) + " |")
    return "\n".join(lines)


COLUMNS = [
    ("solver", "solver", "s"),
    ("d", "d", "d"),
    ("target_nfe", "NFE budget", "d"),
    ("steps", "steps", "d"),
    ("nfe", "NFE", ".0f"),
    ("sw", "SW", ".4f"),
    ("floor", "floor", ".4f"),
    ("ratio", "SW / floor", ".2f"),
    ("ratio_max", "worst", ".2f"),
    ("rmse", "RMSE to limit", ".3g"),
    ("limit_sw", "ODE limit SW", ".4f"),
    ("seconds", "s / run", ".2f"),
]


def solvers_benchmark(
    *,
    out_dir: str,
    dims: Sequence[int],
    seeds: Sequence[int],
    nfe: Sequence[int],
    num_samples: int,
    projections: int,
    floor_repeats: int,
    solvers: dict[str, dict],
    run: Sequence[str],
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    limit: dict | None = None,
    p: int = 2,
    spacing: float = 8.0,
    half_width: int = 2,
    threads: int = 1,
) -> str:
    """Run every solver in ``run`` at every budget in ``nfe`` on every ``(d, seed)`` prior; write
    ``solvers.csv``, ``solvers.json`` and ``solvers.md`` into ``out_dir``; return the markdown report.

    Args:
        out_dir: the run folder (Hydra's output directory from the config).
        dims: prior dimensions ``d`` (even).
        seeds: prior seeds; each ``(d, seed)`` has its own weights, reference and start noise.
        nfe: the network-evaluation budgets.
        num_samples: ``N``, the size of the reference, of each solver's sample and of each floor set.
        projections: sliced-Wasserstein directions.
        floor_repeats: exact sample sets averaged for each floor.
        solvers: name -> ``{sampler, evaluations, params}`` (``configs/benchmark/solvers.yaml``).
        run: the entries of ``solvers`` to run, in order.
        sigma_min, sigma_max, rho: the Karras schedule (then 0).
        limit: ``{sampler, steps, params}``, the converged solve (default UniPC, 500 steps).
        p: the order of the sliced Wasserstein distance.
        spacing, half_width: the prior's grid (:func:`invdiff.benchmarks.gmm.grid_mixture`).
        threads: torch intra-op threads.
    """
    from invdiff.samplers import UNCONDITIONAL

    check_solvers(solvers, run, UNCONDITIONAL)
    limit = {"sampler": "unipc", "steps": 500, **(limit or {})}
    check_solvers({"limit": limit}, ["limit"], UNCONDITIONAL)
    limit_name = f"{limit['sampler']}, {limit['steps']} steps"
    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    for d, seed in itertools.product(dims, seeds):
        prior = grid_mixture(d, spacing=spacing, half_width=half_width,
                             generator=torch.Generator().manual_seed(_seed(d, seed) + 1))
        rows += evaluate_prior(prior, d=d, seed=seed, solvers=solvers, run=run, nfe=nfe, num_samples=num_samples,
                               projections=projections, floor_repeats=floor_repeats, sigma_min=sigma_min,
                               sigma_max=sigma_max, rho=rho, limit=limit, p=p)
    summary = summarise(rows)
    total = time.perf_counter() - start
    config = {"dims": list(dims), "seeds": list(seeds), "nfe": list(nfe), "num_samples": num_samples,
              "projections": projections, "floor_repeats": floor_repeats, "sigma_min": sigma_min,
              "sigma_max": sigma_max, "rho": rho, "limit": limit, "p": p, "spacing": spacing,
              "half_width": half_width,
              "run": list(run), "solvers": {n: solvers[n] for n in run}}
    parts = [
        f"### Unconditional ODE solvers on the 25-component GMM prior: sliced W{p} to {num_samples} "
        f"exact samples, {projections} directions",
        "",
        f"Karras schedule {sigma_max:g} -> {sigma_min:g} (rho {rho:g}) then 0, the same start noise for every "
        f"solver; N = {num_samples} samples per run; means over seeds {list(seeds)}. Cells: SW (SW / floor); "
        f"RMSE, the per-coordinate distance to the ODE limit ({limit_name}) from the same start noise, sample "
        "by sample; [n]: the NFE spent where it differs from the budget (Heun: 2 n - 1 for n steps, the most "
        f"steps that fit). floor: the distance of N fresh exact samples (mean of {floor_repeats}); ODE limit: "
        "the converged solve, whose gap to the floor is the start's (sigma_max z instead of the prior's noised "
        "marginal), not the solver's.",
    ]
    for d in dims:
        parts += ["", f"d = {d}:", "", pivot_table(summary, d, list(nfe), limit_name)]
    parts += ["", markdown_table(summary, COLUMNS), "",
              f"Total {total:.0f} s. Files in {out}: solvers.csv (one row per seed and run), solvers.json, "
              "solvers.md."]
    report = "\n".join(parts)
    atomic_write(out / "solvers.csv", lambda path: path.write_text(_csv_text(rows)))
    record = {"config": config, "seconds": total, "rows": rows, "summary": summary}
    atomic_write(out / "solvers.json", lambda path: path.write_text(json.dumps(json_safe(record), indent=1)))
    atomic_write(out / "solvers.md", lambda path: path.write_text(report + "\n"))
    return report
