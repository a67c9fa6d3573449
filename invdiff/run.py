r"""Run a named method on a problem: the one place where a sampler or a baseline meets its problem.

:class:`Method` names a posterior sampler (a key of :data:`invdiff.samplers.SAMPLERS`, with its
number of steps, noise schedule and options) or a classical baseline (a key of
:data:`invdiff.samplers.BASELINES`, with its options); a bad key, schedule or option raises a
``ValueError`` naming the config key when the method is built, before any work.
:func:`run_method` runs it on a :class:`~invdiff.problems.base.Problem` with a prior and a
generator; :func:`reconstruct` adds the problem's baseline and the scores, and
:func:`save_result` writes a run directory. ``scripts/reconstruct.py``, the batch engine
(:mod:`invdiff.batch`) and every benchmark go through :func:`run_method`.

**Image size.** The unknown's shape is the problem's (the operator's domain), never the size the
prior was trained at: a convolutional prior trained on 64 x 64 crops runs on a 320 x 372 image.
Before any work the prior says at which size it runs (:meth:`~invdiff.priors.base.Denoiser.input_size`):
a prior that cannot run on the problem (other channels, a fixed-size prior at another size)
raises an error naming both shapes; a network that needs sizes divisible by ``2**levels`` runs
on the unknown zero-padded to the next multiple, through ``op @ CenterCrop(padded, size)``, and
the padding is cropped away afterwards. The padded pixels are unobserved, so the prior alone
fills them.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from invdiff.fileio import atomic_save_npy, atomic_write, atomic_write_text, json_safe
from invdiff.priors.base import Denoiser
from invdiff.priors.precision import PRECISIONS, compile_mode_name, with_compile, with_precision
from invdiff.problems.base import Problem
from invdiff.samplers import BASELINES, SAMPLERS
from invdiff.schedules import SCHEDULES, make_sigmas
from operators import CenterCrop

OUTPUTS = ("reconstruction.npy", "baseline.npy", "metrics.json", "figure.png", "config.yaml")
"""The files a run writes; a directory holding any of them is not written over silently."""

_METHOD_KEYS = ("sampler", "baseline", "steps", "schedule", "schedule_params", "params")
PASSED_ARGUMENTS = ("noise_std", "generator", "shape", "callback")
"""Sampler arguments the run layer sets itself; a method's ``params`` may not name them."""
ACTIVE = ("ads",)
"""Samplers that choose their measurements: on a problem with an ``acquisition`` they take its
``budget``, ``start`` (and ``unit``); no other method runs on such a problem."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _options(fn: Callable, skip: int, fixed: tuple[str, ...] = ()) -> list[str] | None:
    """The keyword options of ``fn`` after its first ``skip`` arguments; ``None`` if it takes ``**kwargs``."""
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params[skip:] if p.kind in keyword and p.name not in fixed]


@dataclass
class Method:
    """A named reconstruction method: a posterior sampler with its schedule, or a baseline.

    Attributes:
        name: the method's name in reports (e.g. ``"dds"``, ``"reddiff_100"``).
        sampler: a key of :data:`invdiff.samplers.SAMPLERS`, or ``None`` for a baseline.
        baseline: a key of :data:`invdiff.samplers.BASELINES`, or ``None`` for a sampler.
        steps: the sampler's number of steps (network evaluations for most).
        schedule: a key of :data:`invdiff.schedules.SCHEDULES`.
        schedule_params: the schedule's options; ``sigma_min`` and ``sigma_max`` default to the
            prior's noise range.
        params: the sampler's or baseline's keyword options.
        where: how errors name the method (a config key, e.g. ``"methods.dds"``).
    """

    name: str
    sampler: str | None = None
    baseline: str | None = None
    steps: int = 50
    schedule: str = "vp"
    schedule_params: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    where: str | None = None

    def __post_init__(self) -> None:
        where = self.where or f"methods.{self.name}"
        self.schedule_params, self.params = dict(self.schedule_params or {}), dict(self.params or {})
        if (self.sampler is None) == (self.baseline is None):
            raise ValueError(f"{where}: expected exactly one of 'sampler' and 'baseline'")
        if self.baseline is not None:
            if self.baseline not in BASELINES:
                raise ValueError(f"{where}.baseline: {self.baseline!r} is not one of {sorted(BASELINES)}")
            self._check_options(self.params, _options(BASELINES[self.baseline], 2), f"{where}.params", self.baseline)
            self.params = _checked_values(self.params, BASELINES[self.baseline], f"{where}.params")
            return
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{where}.sampler: {self.sampler!r} is not one of {sorted(SAMPLERS)}")
        options = _options(SAMPLERS[self.sampler], 4, PASSED_ARGUMENTS)
        self._check_options(self.params, options, f"{where}.params", self.sampler)
        self.params = _checked_values(self.params, SAMPLERS[self.sampler], f"{where}.params")
        self.steps = _integer(self.steps, f"{where}.steps", minimum=1)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{where}.schedule: {self.schedule!r} is not one of {sorted(SCHEDULES)}")
        self._check_options(self.schedule_params, _options(SCHEDULES[self.schedule], 1),
                            f"{where}.schedule_params", f"the {self.schedule} schedule")

    @staticmethod
    def _check_options(given: Mapping, accepted: list[str] | None, where: str, owner: str) -> None:
        unknown = sorted(set(given) - set(accepted)) if accepted is not None else []
        if unknown:
            raise ValueError(f"{where}: {unknown} are not options of {owner}; expected some of {accepted}")

    @classmethod
    def from_config(cls, name: str, entry: Mapping, where: str | None = None) -> Method:
        """A method from a config entry ``{sampler|baseline, steps, schedule, schedule_params, params}``."""
        where = where or f"methods.{name}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected a mapping with a 'sampler' or a 'baseline' key, got {entry!r}")
        unknown = sorted(set(entry) - set(_METHOD_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; expected some of {list(_METHOD_KEYS)}")
        if "sampler" not in entry and "baseline" not in entry:
            raise ValueError(f"{where}: expected a 'sampler' or a 'baseline' key, got {sorted(entry)}")
        return cls(name, where=where, **dict(entry))

    @classmethod
    def from_sampler_config(cls, entry: Mapping, where: str = "sampler") -> Method:
        """A sampler from a ``configs/sampler/*.yaml`` entry:
        ``{name, steps, schedule, schedule_params, params}``."""
        entry = dict(entry)
        if "name" not in entry:
            raise ValueError(f"{where}.name: expected the sampler's name, got the keys {sorted(entry)}")
        name = entry.pop("name")
        return cls.from_config(name, {"sampler": name, **entry}, where=where)

    @property
    def is_sampler(self) -> bool:
        return self.sampler is not None

    @property
    def acquires(self) -> bool:
        """Whether the method chooses its measurements (an active sampler, :data:`ACTIVE`)."""
        return self.sampler in ACTIVE

    @property
    def fn(self) -> Callable:
        return SAMPLERS[self.sampler] if self.is_sampler else BASELINES[self.baseline]

    def sigmas(self, prior: Denoiser) -> Tensor:
        """The noise schedule: ``steps`` steps over the prior's noise range unless ``schedule_params``
        narrows it; a discrete network grid (``"vp"``) in the prior's units (its ``data_scale``)."""
        params = {"sigma_min": prior.sigma_min, "sigma_max": prior.sigma_max,
                  "data_scale": getattr(prior, "data_scale", 1.0), **self.schedule_params}
        return make_sigmas(self.schedule, self.steps, **params)


def _integer(value, where: str, *, minimum: int = 0) -> int:
    """``value`` as an ``int`` if it is a whole number ``>= minimum`` (``30`` or ``30.0``), else a
    ``ValueError`` naming ``where``."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                                    and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{where}: expected {kind}, got {value!r}")
    return int(value)


def _checked_values(params: Mapping, fn: Callable, where: str) -> dict:
    """``params`` with each value checked against the type its option declares in ``fn``'s signature.

    An ``int`` option takes a whole number ``>= 0``, a ``float`` option a finite real number and a
    ``bool`` option a boolean, each also ``None`` where the annotation allows it; other options
    pass through (the method checks them). This runs when a method is built, so a value such as
    ``max_iter=nan`` stops a run before any work rather than failing every slice.
    """
    declared = inspect.signature(fn).parameters
    checked = dict(params)
    for name, value in params.items():
        annotation = declared[name].annotation if name in declared else inspect.Parameter.empty
        kinds = {k.strip() for k in str(annotation).split("|")} if isinstance(annotation, str) else set()
        if value is None and "None" in kinds:
            continue
        key = f"{where}.{name}"
        if "int" in kinds and "float" not in kinds:
            checked[name] = _integer(value, key)
        elif "float" in kinds and "int" not in kinds:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{key}: expected a finite number, got {value!r}")
            checked[name] = float(value)
        elif kinds == {"bool"} and not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
    return checked


def _generator_on(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` itself on its own device type, else a generator on ``device`` seeded from it."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(2**62, (), generator=generator))
    return torch.Generator(device).manual_seed(seed)


def run_method(
    method: Method,
    problem: Problem,
    prior: Denoiser | None = None,
    *,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    compile_mode: str | bool = "off",
    callback: Callable[[dict], None] | None = None,
) -> tuple[Tensor, dict]:
    """Run ``method`` on ``problem``.

    Args:
        method: the sampler or baseline.
        problem: what to reconstruct.
        prior: the denoiser a sampler needs; baselines ignore it.
        generator: the source of every random choice; the same state gives the same output on
            the CPU. On another device type a generator there is seeded from it.
        device: where to run (``"auto"``: CUDA when present).
        precision: the network's precision, ``"fp32"``, ``"bf16"`` or ``"fp16"``
            (:func:`invdiff.priors.precision.with_precision`); the sampler itself runs in float32.
        compile_mode: ``torch.compile`` the network: ``"off"``, ``"default"``,
            ``"reduce-overhead"`` (CUDA graphs) or ``"max-autotune"``; ``True`` is ``"default"``
            (:func:`invdiff.priors.precision.with_compile`).
        callback: called after every sampler step with the sampler's step dictionary.

    Returns:
        ``(x, info)``: ``x`` ``problem.x_shape`` on the CPU in the operator's domain (the
        model's scale), ``info`` the method's, with ``nfe`` and ``seconds`` (wall time until
        ``x`` is on the CPU, so that a GPU's queued work is counted).

    Raises:
        ValueError: a sampler without a prior, a prior that cannot run on the problem (naming both
            shapes), an unknown precision, or the method's own input errors.
    """
    if problem.acquisition is not None and not (method.is_sampler and method.acquires):
        raise ValueError(
            f"{method.name}: the problem acquires its measurements actively (budget "
            f"{problem.acquisition.get('budget')}); {method.name!r} reconstructs from fixed ones; "
            f"use an active sampler ({', '.join(ACTIVE)})"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    compile_mode = compile_mode_name(compile_mode)
    device = resolve_device(device)
    start = time.perf_counter()
    op, y = problem.op.to(device=device), problem.y.to(device)
    if not method.is_sampler:
        x, info = method.fn(op, y, **method.params)
    else:
        if prior is None:
            raise ValueError(f"{method.name}: the sampler {method.sampler!r} needs a prior")
        shape = problem.x_shape
        size = tuple(prior.input_size(shape))
        _warn_below_training_size(prior, shape)
        if size != shape[-2:]:
            op = op @ CenterCrop(size, shape[-2:])
        denoiser = with_compile(with_precision(prior.to(device), precision), compile_mode)
        x, info = method.fn(
            denoiser, op, y, method.sigmas(prior).to(device), noise_std=problem.noise_std,
            generator=_generator_on(generator, device), shape=(*shape[:2], *size), callback=callback,
            **{**method.params, **acquisition_options(method, problem)},
        )
        if size != shape[-2:]:
            x = CenterCrop(size, shape[-2:]).A(x)
    x = x.detach().cpu()
    return x, {**info, "nfe": int(info.get("nfe", 0)), "seconds": time.perf_counter() - start}


def acquisition_options(method: Method, problem: Problem) -> dict:
    """The problem's acquisition terms (budget, start, unit) for an active sampler, which take
    precedence over the method's own; nothing for a fixed measurement."""
    return dict(problem.acquisition) if problem.acquisition is not None and method.acquires else {}


SMALL_FRACTION = 0.5
"""A network prior run on an image with a side below this fraction of its training size warns."""


def _warn_below_training_size(prior: Denoiser, x_shape: tuple[int, ...]) -> None:
    """Warn when a convolutional prior runs far below the size it was trained at: it has learnt
    structure at its training scale and may do worse there than a classical method. A prior trained
    on patches (``prior.patches``) counts its patch size; larger images never warn."""
    if prior.shape is None or prior.size_multiple is None:
        return
    trained = tuple(int(s) for s in prior.shape[1:])
    if any(s < SMALL_FRACTION * t for s, t in zip(x_shape[-2:], trained)):
        at = f"on {trained[0]} x {trained[1]} patches" if prior.patches else f"at {trained[0]} x {trained[1]}"
        warnings.warn(
            f"{prior._name()}: trained {at}, run on {x_shape[-2]} x {x_shape[-1]}, "
            f"less than {SMALL_FRACTION:g} of its training size in a dimension; expect it to do worse than at "
            f"its own scale (compare with the classical baseline)", stacklevel=3)


def baseline_method(problem: Problem) -> Method:
    """The problem's classical reconstruction as a :class:`Method`."""
    return Method(problem.baseline, baseline=problem.baseline, params=problem.baseline_kwargs,
                  where=f"{problem.name}.baseline")


@dataclass
class Result:
    """A finished reconstruction: the method's and the baseline's outputs (operator domain) and the scores."""

    x_hat: Tensor
    x_baseline: Tensor
    metrics: dict
    info: dict


def reconstruct(
    problem: Problem,
    prior: Denoiser | None,
    method: Method,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    compile_mode: str | bool = "off",
    callback: Callable[[dict], None] | None = None,
) -> Result:
    """Run ``method`` and the problem's baseline on ``problem`` and score both when it has a target.

    Args:
        problem: what to reconstruct.
        prior: the prior a sampler needs.
        method: the method to run.
        seed: seeds the method's generator; the same seed gives the same output on the CPU.
        device: where to run.
        precision: the network's precision.
        compile_mode: ``torch.compile`` the network (see :func:`run_method`).
        callback: called after every sampler step.
    """
    device = resolve_device(device)
    x_hat, info = run_method(method, problem, prior, generator=torch.Generator().manual_seed(seed), device=device,
                             precision=precision, compile_mode=compile_mode, callback=callback)
    baseline = baseline_method(problem)
    # an active method's baseline reconstructs from the units the method acquired
    fixed = problem if problem.acquisition is None else problem.acquired(info["mask"], info["unit"])
    x_baseline, _ = run_method(baseline, fixed, generator=torch.Generator().manual_seed(seed), device=device)
    metrics = {
        "task": problem.name,
        "sampler": method.name,
        "baseline": baseline.name,
        "reconstruction": problem.score(x_hat),
        "baseline_metrics": problem.score(x_baseline),
        "nfe": info["nfe"],
        "seconds": float(info["seconds"]),
        "seed": seed,
        "device": str(device),
        "precision": precision,
        "compile": compile_mode,
        "shape": list(problem.x_shape),
        "problem": problem.info,
    }
    if "order" in info:  # an active method: what it acquired, in order
        metrics["acquisition"] = {"unit": info["unit"], "budget": info["budget"], "order": info["order"].tolist(),
                                  "acquired_at": info["acquired_at"].tolist()}
    return Result(x_hat, x_baseline, metrics, info)


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a directory that already holds a run's outputs unless ``overwrite``."""
    existing = [name for name in OUTPUTS if (Path(run_dir) / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{run_dir}: already holds {', '.join(existing)}; choose another hydra.run.dir or pass overwrite=true"
        )


def save_result(result: Result, problem: Problem, run_dir: Path, config_yaml: str) -> None:
    """Write ``reconstruction.npy`` and ``baseline.npy`` (:meth:`Problem.output`, data units),
    ``metrics.json``, ``figure.png`` (reference, when there is one, | baseline | reconstruction
    | error) and the resolved ``config.yaml`` into ``run_dir``, each atomically."""
    from invdiff.figures import comparison_figure

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(run_dir / "reconstruction.npy", problem.output(result.x_hat))
    atomic_save_npy(run_dir / "baseline.npy", problem.output(result.x_baseline))
    text = json.dumps(json_safe(result.metrics), indent=2) + "\n"
    atomic_write_text(run_dir / "metrics.json", text)
    atomic_write_text(run_dir / "config.yaml", config_yaml)
    middle = problem.batch // 2  # the middle slice of a volume, the image of a 2D problem
    truth = problem.target[middle] if problem.target is not None else None
    images = [problem.image(x)[middle] for x in (result.x_baseline, result.x_hat)]
    atomic_write(
        run_dir / "figure.png",
        lambda p: comparison_figure(
            truth, *images,
            titles=("reference", result.metrics["baseline"], result.metrics["sampler"]),
            scores=(result.metrics["baseline_metrics"], result.metrics["reconstruction"]),
            path=p,
        ),
    )
