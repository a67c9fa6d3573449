r"""Exact-posterior benchmark: Gaussian-mixture priors, random linear measurements, sliced Wasserstein.

The setup of MCGDiff (Cardoso, Janati, Le Corff, Moulines, ICLR 2024, section 4.1 and
``scripts/viz_gaussian.py`` of ``gabrielvc/mcg_diff``), per problem ``(d, d_y, seed)``:

* prior: 25 unit-covariance Gaussians with means :math:`(8i, 8j, 8i, 8j, \dots) \in \mathbb R^d`
  for :math:`i, j \in \{-2, \dots, 2\}` and weights :math:`w_k \propto \epsilon_k^2`,
  :math:`\epsilon_k \sim \mathcal N(0, 1)`;
* operator: :math:`A = U \operatorname{diag}(s) V^T` from the SVD of a standard normal
  ``(d_y, d)`` matrix, its singular values replaced by sorted uniforms on ``[0, 1]``;
* noise std :math:`\sigma_y = u \max_i s_i`, :math:`u \sim U[0, 1]`, and
  :math:`y = A x + \sigma_y \epsilon` for one prior sample :math:`x`.

The posterior is a Gaussian mixture again (:meth:`GaussianMixture.posterior`), so every sampler's
output is compared with exact samples: the distance is the sliced Wasserstein distance
(:func:`invdiff.metrics.sliced_wasserstein`, ``p = 2``) between the sampler's ``N`` samples and
a reference set of ``num_samples`` exact samples; the *floor* is the same distance for ``N``
fresh exact samples (the mean over ``floor_repeats`` draws), i.e. what a perfect sampler scores
with that many samples. Both use the same projection directions.

Two kinds of samplers, by the config's ``population``:

* ``chains``: independent chains (DPS, DDS, RED-Diff): ``y`` repeated ``N`` times in the batch,
  the batch is the sample.
* ``particles``: SMC samplers: ``y`` of batch 1 and ``num_particles=N``; the sample is
  ``info["particles"]`` ``(1, N, ...)``, equally weighted after the final resampling.
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
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from invdiff.benchmarks.common import check_run_entry, markdown_table
from invdiff.fileio import atomic_write, json_safe
from invdiff.metrics import sliced_wasserstein
from invdiff.priors.gmm import GaussianMixture
from invdiff.problems.base import Problem as InverseProblem
from invdiff.run import Method, run_method
from operators.base import Matrix

log = logging.getLogger(__name__)

POPULATIONS = ("chains", "particles")
CSV_FIELDS = [
    "d", "dy", "seed", "noise_std", "sampler", "population", "steps", "nfe", "particles",
    "sw", "floor", "ratio", "seconds", "error",
]


def grid_mixture(d: int, *, spacing: float = 8.0, half_width: int = 2, generator: torch.Generator) -> GaussianMixture:
    r"""MCGDiff's prior: unit-covariance Gaussians on a 2D grid repeated over the coordinates.

    Args:
        d: the dimension, even.
        spacing: the grid step (8 in the paper).
        half_width: grid indices :math:`-h, \dots, h` (2 in the paper: 25 components).
        generator: the source of the weights :math:`w_k \propto \epsilon_k^2`.

    Returns:
        A :class:`GaussianMixture` on ``(1, 1, d)`` with isotropic (fast-path) covariances.
    """
    if d < 2 or d % 2:
        raise ValueError(f"d: expected an even dimension >= 2, got {d}")
    idx = torch.arange(-half_width, half_width + 1, dtype=torch.float64)
    pairs = torch.cartesian_prod(idx, idx)  # (K, 2): (i, j)
    means = spacing * pairs.repeat(1, d // 2)
    K = means.shape[0]
    weights = torch.randn(K, generator=generator, dtype=torch.float64).square()
    covs = torch.eye(d, dtype=torch.float64).expand(K, d, d)
    return GaussianMixture(means, covs, weights, shape=(1, 1, d))


def random_measurement(
    prior: GaussianMixture, dy: int, *, generator: torch.Generator
) -> tuple[Tensor, float, Tensor]:
    r"""MCGDiff's operator, noise level and measurement (module docstring).

    Returns:
        ``(A, noise_std, y)``: ``A`` ``(dy, d)``, the noise std, ``y`` ``(dy,)``.
    """
    d = prior.dim
    if not 1 <= dy <= d:
        raise ValueError(f"dy: expected 1 <= dy <= d={d}, got {dy}")
    G = torch.randn(dy, d, generator=generator, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    s = torch.sort(torch.rand(dy, generator=generator, dtype=torch.float64), descending=True).values
    A = U @ torch.diag(s) @ Vh
    noise_std = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(s.max())
    x = prior.sample(1, generator=generator).reshape(d)
    y = A @ x + noise_std * torch.randn(dy, generator=generator, dtype=torch.float64)
    return A, noise_std, y


@dataclass
class Problem:
    """One ``(d, dy, seed)`` problem with its exact posterior and reference samples."""

    d: int
    dy: int
    seed: int
    prior: GaussianMixture
    A: Tensor
    noise_std: float
    y: Tensor
    posterior: GaussianMixture
    reference: Tensor  # (num_samples, 1, 1, d)

    @property
    def op(self) -> Matrix:
        return Matrix(self.A, (1, 1, self.d))


def make_problem(d: int, dy: int, seed: int, *, num_samples: int, spacing: float, half_width: int) -> Problem:
    """Prior, measurement, exact posterior and ``num_samples`` reference samples, all from one seed."""
    g = torch.Generator().manual_seed(_problem_seed(d, dy, seed))
    prior = grid_mixture(d, spacing=spacing, half_width=half_width, generator=g)
    A, noise_std, y = random_measurement(prior, dy, generator=g)
    posterior = prior.posterior(A, y, noise_std)
    reference = posterior.sample(num_samples, generator=g)
    return Problem(d, dy, seed, prior, A, noise_std, y, posterior, reference)


def _problem_seed(d: int, dy: int, seed: int) -> int:
    return 1_000_003 * seed + 1_009 * d + dy


def check_samplers(samplers: dict[str, dict], run: Sequence[str], registry: dict) -> None:
    """Raise a ``ValueError`` before any work when a sampler in ``run`` is unknown or malformed."""
    registered = ','.join(n for n in run if samplers.get(n, {}).get('sampler', n) in registry)
    hint = f"; register it or drop it from benchmark.run, e.g. benchmark.run=[{registered}]"
    for name in run:
        entry = check_run_entry("gmm", "samplers", samplers, name, registry, "invdiff.samplers.SAMPLERS", hint)
        if entry.get("population", "chains") not in POPULATIONS:
            raise ValueError(
                f"benchmark gmm: samplers.{name}.population: expected one of {POPULATIONS}, "
                f"got {entry.get('population')!r}"
            )
        for key in ("steps", "particles", "dims"):
            values = entry.get(key)
            if values is not None and (not isinstance(values, (list, tuple)) or not values):
                raise ValueError(f"benchmark gmm: samplers.{name}.{key}: expected a non-empty list, got {values!r}")
        if "num_particles" in (entry.get("params") or {}):
            raise ValueError(f"benchmark gmm: samplers.{name}.params: set the sample size with `particles`, "
                             f"not num_particles")


def run_sampler(
    method: Method, problem: Problem, *, population: str, n: int, generator: torch.Generator
) -> tuple[Tensor, dict]:
    """``n`` samples of one sampler on one problem, ``(n, 1, 1, d)``, and its ``info``, through
    :func:`invdiff.run.run_method`: ``n`` chains are the batch of ``y`` repeated, ``n`` particles
    one problem with ``num_particles=n``."""
    if population == "chains":
        y = problem.y.reshape(1, -1).expand(n, -1)
        posed = InverseProblem("gmm", problem.op, y, problem.noise_std, (n, 1, 1, problem.d))
        x, info = run_method(method, posed, problem.prior, generator=generator)
        return x.reshape(n, 1, 1, problem.d), info
    method = replace(method, params={**method.params, "num_particles": n})
    posed = InverseProblem("gmm", problem.op, problem.y.reshape(1, -1), problem.noise_std, (1, 1, 1, problem.d))
    x, info = run_method(method, posed, problem.prior, generator=generator)
    particles = info.get("particles")
    if particles is None or particles.numel() != n * problem.d:
        shape = None if particles is None else tuple(particles.shape)
        raise ValueError(
            f"benchmark gmm: a particles sampler must return info['particles'] of shape (1, {n}, ...), got {shape}"
        )
    return particles.reshape(n, 1, 1, problem.d), info


def _floors(
    problem: Problem, sizes: Sequence[int], *, projections: int, repeats: int, seed: int, p: int = 2
) -> dict[int, float]:
    """Mean SW of ``repeats`` fresh exact sets of each size to the reference, per size."""
    g = torch.Generator().manual_seed(_problem_seed(problem.d, problem.dy, problem.seed) + 7)
    floors = {}
    for n in sorted(set(sizes)):
        draws = [problem.posterior.sample(n, generator=g) for _ in range(repeats)]
        floors[n] = statistics.fmean(
            sliced_wasserstein(e, problem.reference, projections=projections, p=p,
                               generator=torch.Generator().manual_seed(seed)) for e in draws
        )
    return floors


def evaluate_problem(
    problem: Problem,
    samplers: dict[str, dict],
    run: Sequence[str],
    *,
    num_samples: int,
    projections: int,
    floor_repeats: int,
    p: int = 2,
) -> list[dict]:
    """Every configured sampler and sweep point on one problem: one row each (``CSV_FIELDS``)."""
    sw_seed = _problem_seed(problem.d, problem.dy, problem.seed) + 3
    run = [name for name in run if problem.d in (samplers[name].get("dims") or [problem.d])]
    sweeps = {name: _sweep(samplers[name], num_samples, problem.d) for name in run}
    floors = _floors(problem, [n for s in sweeps.values() for _, n in s], projections=projections,
                     repeats=floor_repeats, seed=sw_seed, p=p)
    rows = []
    for name in run:
        entry = samplers[name]
        population = entry.get("population", "chains")
        for steps, n in sweeps[name]:
            method = Method(name, sampler=entry.get("sampler", name), steps=steps,
                            schedule=entry.get("schedule", "vp"), schedule_params=entry.get("schedule_params") or {},
                            params=entry.get("params") or {}, where=f"benchmark.samplers.{name}")
            generator = torch.Generator().manual_seed(_problem_seed(problem.d, problem.dy, problem.seed) + 11)
            row = {"d": problem.d, "dy": problem.dy, "seed": problem.seed, "noise_std": problem.noise_std,
                   "sampler": name, "population": population, "steps": steps, "particles": n,
                   "floor": floors[n], "error": ""}
            start = time.perf_counter()
            try:
                x, info = run_sampler(method, problem, population=population, n=n, generator=generator)
            except FloatingPointError as err:  # a diverging chain is a result, recorded and reported
                row.update(nfe=float("nan"), sw=float("nan"), ratio=float("nan"),
                           seconds=time.perf_counter() - start, error=f"FloatingPointError: {err}")
                log.warning("d=%d dy=%d seed=%d %s steps=%d N=%d: %s", problem.d, problem.dy, problem.seed,
                            name, steps, n, row["error"])
                rows.append(row)
                continue
            seconds = time.perf_counter() - start
            sw = sliced_wasserstein(x, problem.reference, projections=projections, p=p,
                                    generator=torch.Generator().manual_seed(sw_seed))
            row.update(nfe=info["nfe"] or steps, sw=sw, ratio=sw / floors[n], seconds=seconds)
            log.info("d=%d dy=%d seed=%d %s steps=%d N=%d: SW %.4g (floor %.4g) in %.1f s", problem.d, problem.dy,
                     problem.seed, name, steps, n, sw, floors[n], seconds)
            rows.append(row)
    return rows


def _sweep(entry: dict, num_samples: int, d: int) -> list[tuple[int, int]]:
    """``(steps, N)`` pairs of an entry at dimension ``d``; ``particles_by_dim[d]`` overrides ``particles``."""
    steps = [int(s) for s in entry.get("steps") or [50]]
    by_dim = {int(k): v for k, v in (entry.get("particles_by_dim") or {}).items()}
    particles = [int(n) for n in by_dim.get(d) or entry.get("particles") or [num_samples]]
    return list(itertools.product(steps, particles))


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Means over problems per ``(sampler, steps, particles, d)``; ``ratio`` is the mean per-problem ratio."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["sampler"], row["steps"], row["particles"], row["d"]), []).append(row)
    out = []
    for (sampler, steps, particles, d), group in groups.items():
        ok = [r for r in group if not r["error"]]
        mean = (lambda key: statistics.fmean(r[key] for r in ok)) if ok else (lambda key: float("nan"))
        out.append({
            "sampler": sampler, "population": group[0]["population"], "steps": steps, "particles": particles,
            "d": d, "nfe": mean("nfe"), "sw": mean("sw"), "floor": statistics.fmean(r["floor"] for r in group),
            "ratio": mean("ratio"), "ratio_max": max((r["ratio"] for r in ok), default=float("nan")),
            "seconds": mean("seconds"), "problems": len(group), "failed": len(group) - len(ok),
        })
    return out


def _csv_text(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in CSV_FIELDS} for row in rows)
    return buf.getvalue()


def plot(summary: Sequence[dict], dims: Sequence[int]) -> bytes:
    """PNG, one column per dimension: mean SW against NFE (top; dashed: the floor for each chain
    count) and, when some entry sweeps ``N``, against ``N`` (bottom; dashed: the floor, dotted:
    1.5 times it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(dict.fromkeys(r["sampler"] for r in summary))
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    sweeps_n = any(len({r["particles"] for r in summary if r["sampler"] == n and r["steps"] == s}) > 1
                   for n in names for s in {r["steps"] for r in summary if r["sampler"] == n})
    nrows = 2 if sweeps_n else 1
    fig, axes = plt.subplots(nrows, len(dims), figsize=(4.4 * len(dims), 3.8 * nrows), squeeze=False)

    def mean_floor(rows, n):
        return statistics.fmean(r["floor"] for r in rows if r["particles"] == n)

    for col, d in enumerate(dims):
        rows = [r for r in summary if r["d"] == d]
        # 1. Distance against NFE, one line per entry at its largest sample size.
        ax = axes[0, col]
        largest = {}
        for name in names:
            sizes = [r["particles"] for r in rows if r["sampler"] == name]
            if sizes:
                largest[name] = n = max(sizes)
                pts = sorted((r["nfe"], r["sw"]) for r in rows if r["sampler"] == name and r["particles"] == n)
                ax.plot(*zip(*pts), "o-", color=colors[name], label=f"{name} N={n}", ms=4)
        for i, n in enumerate(sorted(set(largest.values()))):
            ax.axhline(mean_floor(rows, n), color="k", ls=("--", "-.", ":")[i % 3], lw=0.8, label=f"floor N={n}")
        ax.set(title=f"d = {d}", xlabel="NFE", ylabel="sliced Wasserstein to exact samples", xscale="log", yscale="log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=6)
        # 2. Distance against the number of particles, one line per entry and step count.
        if nrows == 2:
            ax = axes[1, col]
            for name in names:
                for steps in sorted({r["steps"] for r in rows if r["sampler"] == name}):
                    pts = sorted((r["particles"], r["sw"]) for r in rows if r["sampler"] == name and r["steps"] == steps)
                    if len(pts) > 1:
                        ax.plot(*zip(*pts), "o-", color=colors[name], ms=4, label=f"{name}, {steps} steps")
            sizes = sorted({r["particles"] for r in rows})
            if sizes:
                floors = [mean_floor(rows, n) for n in sizes]
                ax.plot(sizes, floors, "k--", label="floor (exact samples)")
                ax.plot(sizes, [1.5 * f for f in floors], "k:", lw=0.8, label="1.5 x floor")
            ax.set(xlabel="samples N (particles)", ylabel="sliced Wasserstein to exact samples", xscale="log", yscale="log")
            ax.legend(fontsize=6)
    fig.suptitle("Exact GMM posteriors (MCGDiff setup), mean over d_y and seeds")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


COLUMNS = [
    ("sampler", "sampler", "s"),
    ("steps", "steps", "d"),
    ("nfe", "NFE", ".0f"),
    ("particles", "N", "d"),
    ("d", "d", "d"),
    ("sw", "SW", ".3f"),
    ("floor", "floor", ".3f"),
    ("ratio", "SW / floor", ".2f"),
    ("ratio_max", "worst", ".2f"),
    ("seconds", "s / run", ".2f"),
    ("failed", "failed", "d"),
]


def gmm_benchmark(
    *,
    out_dir: str,
    dims: Sequence[int],
    measurements: Sequence[int],
    seeds: Sequence[int],
    num_samples: int,
    projections: int,
    floor_repeats: int,
    samplers: dict[str, dict],
    run: Sequence[str],
    p: int = 2,
    spacing: float = 8.0,
    half_width: int = 2,
    threads: int = 1,
) -> str:
    """Run every sampler in ``run`` on every ``(d, dy, seed)`` problem; write ``gmm.csv``,
    ``gmm.json`` and ``gmm.png`` into ``out_dir``; return the markdown report.

    Args:
        out_dir: the run folder (Hydra's output directory from the config).
        dims: prior dimensions ``d`` (even).
        measurements: numbers of measurements ``dy``.
        seeds: problem seeds; each ``(d, dy, seed)`` has its own weights, operator and data.
        num_samples: the size of the exact reference set, and the default ``N`` of a sampler.
        projections: sliced-Wasserstein directions.
        floor_repeats: exact sample sets averaged for each floor.
        p: the order of the sliced Wasserstein distance.
        samplers: name -> ``{sampler, population, schedule, schedule_params, steps, particles,
            particles_by_dim, dims, params}`` (``configs/benchmark/gmm.yaml`` documents each key).
        run: the entries of ``samplers`` to run, in order.
        spacing, half_width: the prior's grid (module docstring).
        threads: torch intra-op threads.
    """
    from invdiff.samplers import SAMPLERS

    check_samplers(samplers, run, SAMPLERS)
    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, problems = [], []
    for d, dy, seed in itertools.product(dims, measurements, seeds):
        problem = make_problem(d, dy, seed, num_samples=num_samples, spacing=spacing, half_width=half_width)
        problems.append({"d": d, "dy": dy, "seed": seed, "noise_std": problem.noise_std,
                         "singular_values": torch.linalg.svdvals(problem.A).tolist(),
                         "posterior_weights_max": float(problem.posterior.weights.max())})
        rows += evaluate_problem(problem, samplers, run, num_samples=num_samples,
                                 projections=projections, floor_repeats=floor_repeats, p=p)
    summary = summarise(rows)
    total = time.perf_counter() - start
    config = {"dims": list(dims), "measurements": list(measurements), "seeds": list(seeds),
              "num_samples": num_samples, "projections": projections, "floor_repeats": floor_repeats, "p": p,
              "spacing": spacing, "half_width": half_width, "run": list(run),
              "samplers": {n: samplers[n] for n in run}}
    atomic_write(out / "gmm.csv", lambda path: path.write_text(_csv_text(rows)))
    record = {"config": config, "seconds": total, "problems": problems, "rows": rows, "summary": summary}
    atomic_write(out / "gmm.json", lambda path: path.write_text(json.dumps(json_safe(record), indent=1)))
    atomic_write(out / "gmm.png", lambda path: path.write_bytes(plot(summary, list(dims))))
    return "\n".join([
        f"### Exact GMM posteriors (MCGDiff setup): sliced W{p} to {num_samples} exact samples, "
        f"{projections} directions",
        "",
        f"d in {list(dims)}, d_y in {list(measurements)}, seeds {list(seeds)}: means over the "
        f"{len(measurements) * len(seeds)} problems per d. N: samples per run (chains, or SMC particles). "
        f"floor: the same distance for N exact samples (mean of {floor_repeats}); SW / floor is the mean "
        "per-problem ratio, worst its maximum.",
        "",
        markdown_table(summary, COLUMNS),
        "",
        f"Total {total:.0f} s. Files in {out}: gmm.csv (one row per problem and run), gmm.json, gmm.png.",
    ])
