r"""Batch benchmarks over folders of volumes: fastMRI multi-coil MRI and CT (:mod:`invdiff.batch`).

``python scripts/benchmark.py benchmark=mri data.root=<folder of fastMRI h5 files>`` and
``benchmark=ct``; without ``data.root`` they run on the project's generated volumes
(``data/README.md``: ``mri_brain_fastmri_64/test`` and ``ct_volumes_64/test``). The prior is the
``prior`` group's (``configs/prior/<benchmark>.yaml`` by default; ``prior=adm prior.path=...``
for a public checkpoint).

**MRI**: the problems of :mod:`invdiff.problems.fastmri` (the readers and rules are there):
coil maps from the ACS lines, the intensity scale and the noise level estimated from the
measured k-space (``coil_maps=acs``, ``scale=estimate``, ``noise_std=null``), or the oracle
options (``coil_maps=oracle``: ESPIRiT maps of the fully sampled slice; ``scale=oracle``: the
reference volume's maximum; a known ``noise_std``), which the summary marks as an upper bound.
Fully sampled files are undersampled with each setting's fastMRI line mask and scored;
prospective files (test and challenge data) are reconstructed with their own mask, written, and
not scored.

**CT**: :class:`invdiff.batch.folders.CTFolder`.

Methods are :class:`invdiff.run.Method` entries of the config (``sampler``: a key of
:data:`invdiff.samplers.SAMPLERS` with ``steps``, ``schedule``, ``schedule_params`` and
``params``; ``baseline``: a key of :data:`invdiff.samplers.BASELINES` with ``params``); a bad
entry stops the run before any slice, naming its config key.

**Resume.** ``benchmark.out_dir`` is the run folder: the same command again resumes it, and a
command with other parameters (a method's entry, a setting, the noise options, ``data.root`` or
its files, the seed, ``slice_batch``, ``data.slices``, the prior of a sampler) is refused with
the list of what changed (:func:`invdiff.batch.engine.check_record`); ``benchmark.resume=false``
starts afresh, in ``<out_dir>-2`` (``-3``, ...) when ``out_dir`` holds a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from invdiff.batch.engine import markdown_summary, resolve_shard, run_batch
from invdiff.batch.folders import CTFolder, FastMRIFolder, ct_volumes
from invdiff.priors.base import Denoiser
from invdiff.problems.fastmri import MapsOptions
from invdiff.run import Method, resolve_device


class MethodsFailed(RuntimeError):
    """Some methods failed on every slice of a setting; ``report`` holds the summary table, written
    to the run folder before this is raised, for the caller to show before it exits with an error."""

    def __init__(self, message: str, report: str):
        super().__init__(message)
        self.report = report


def failed_everywhere(summary: dict) -> list[tuple[str, str]]:
    """The ``(setting, method)`` pairs of a summary with failed rows and no good one."""
    good = {(e["setting"], e["method"]) for e in summary.get("methods", [])}
    return sorted({(f["setting"], f["method"]) for f in summary.get("failed", [])} - good)


def build_methods(methods: Mapping[str, Mapping], run: Sequence[str] | None = None) -> dict[str, Method]:
    """``{name: Method}`` of the config's ``methods`` entries named in ``run`` (default: all), in
    that order; unknown names and bad entries raise here, naming the config key."""
    names = list(run or methods)
    unknown = [m for m in names if m not in methods]
    if unknown:
        raise ValueError(f"run: {unknown} have no entry under methods (configured: {', '.join(methods)})")
    return {name: Method.from_config(name, methods[name]) for name in names}


def select_settings(settings: Mapping[str, Mapping], run_settings: Sequence[str] | None) -> dict[str, Mapping]:
    """The config's ``settings`` named in ``run_settings`` (default: all), in that order; unknown
    names raise here, naming the config key."""
    names = list(run_settings or settings)
    unknown = [s for s in names if s not in settings]
    if unknown:
        raise ValueError(f"run_settings: {unknown} have no entry under settings (configured: {', '.join(settings)})")
    return {name: settings[name] for name in names}


def _batch_benchmark(dataset, *, name: str, out_dir: str, settings: Mapping, methods: Mapping,
                     run: Sequence[str] | None, run_settings: Sequence[str] | None, prior: Denoiser | None,
                     seed: int, threads: int, device: str,
                     precision: str, compile_mode: str | bool, slice_batch: int, shard: int, num_shards: int,
                     max_items: int | None, slices: Sequence[int] | None, notes: Sequence[str] = (), resume: bool = True) -> str:
    torch.set_num_threads(int(threads))
    built = build_methods(methods, run)
    settings = select_settings(settings, run_settings)
    if prior is None and any(m.is_sampler for m in built.values()):
        samplers = [m.name for m in built.values() if m.is_sampler]
        raise ValueError(f"benchmark {name}: {samplers} need a prior; choose one with prior=<name> "
                         f"(e.g. prior=mri, prior=unet prior.path=...)")
    where = resolve_shard(shard, num_shards)
    device = resolve_device(device)
    if device.type == "cuda" and where.distributed:
        device = torch.device(f"cuda:{where.local_rank}")
    result = run_batch(dataset, built, dict(settings), Path(out_dir), prior=prior, seed=seed, shard=where,
                       slices=slices, slice_batch=slice_batch, device=device, precision=precision,
                       compile_mode=compile_mode, notes=notes, max_items=max_items, resume=resume)
    folder = str(result.out_dir)
    if Path(out_dir) != result.out_dir:
        folder += f" (benchmark.resume=false: {out_dir} holds an earlier run)"
    if not result.summary:
        return f"shard {where.index} of {where.count}: {result.done} slice batches done in {folder}; rank 0 writes the summary"
    report = f"{name} benchmark, {result.summary['rows']} slice rows in {folder}\n\n" + markdown_summary(result.summary)
    failed = failed_everywhere(result.summary)
    if failed:
        first = {(f["setting"], f["method"]): f["error"] for f in reversed(result.summary["failed"])}
        lines = "; ".join(f"{method} failed on every slice of {setting} ({first[(setting, method)]})"
                          for setting, method in failed)
        raise MethodsFailed(f"benchmark {name}: {lines}; the rows and errors are in {result.out_dir} "
                            f"(summary.json, 'failed')", report)
    return report


def mri_benchmark(*, data: dict, out_dir: str, settings: dict, methods: dict, prior: Denoiser | None,
                  run: Sequence[str] | None = None, run_settings: Sequence[str] | None = None,
                  coil_maps: str = "acs", scale: str = "estimate",
                  noise_std: float | None = None, calib_rows: int = 24, kernel_width: int = 6, seed: int = 0,
                  threads: int = 1, device: str = "cpu", precision: str = "fp32", compile: str | bool = False,
                  slice_batch: int = 1, shard: int = 0, num_shards: int = 1, max_items: int | None = None, resume: bool = True) -> str:
    """The fastMRI batch benchmark (module docstring); returns the summary table.

    Raises:
        MethodsFailed: a method failed on every slice of a setting (after the summary is written).
    """
    root = data.get("root")
    if root is None:
        from invdiff.data.datasets import DATASETS_FASTMRI

        root = DATASETS_FASTMRI["mri_brain_fastmri"](data.get("data_root", "data"), size=64, split="test")
    maps = MapsOptions(coil_maps, calib_rows=calib_rows, kernel_width=kernel_width,
                       cache_dir=Path(out_dir) / "coil_maps")
    dataset = FastMRIFolder(Path(root), maps, scale=scale, noise_std=noise_std, pattern=data.get("pattern", "*.h5"))
    oracle = [what for what, used in (("coil maps of the fully sampled slices", coil_maps == "oracle"),
                                      ("the reference volume's maximum as the intensity scale", scale == "oracle"))
              if used]
    notes = [f"Oracle information ({' and '.join(oracle)}): an upper bound, not a result on measured data alone."] \
        if oracle else [f"Coil maps from the ACS lines; intensity scale and noise level "
                        f"{'estimated' if noise_std is None else f'(noise std {noise_std} given)'} from the measured k-space."]
    return _batch_benchmark(dataset, name="mri", out_dir=out_dir, settings=settings, methods=methods, run=run,
                            run_settings=run_settings,
                            prior=prior, seed=seed, threads=threads, device=device, precision=precision,
                            compile_mode=compile, slice_batch=slice_batch, shard=shard, num_shards=num_shards,
                            max_items=max_items, slices=data.get("slices"), notes=notes, resume=resume)


def ct_benchmark(*, data: dict, out_dir: str, settings: dict, methods: dict, prior: Denoiser | None,
                 run: Sequence[str] | None = None, run_settings: Sequence[str] | None = None, seed: int = 0,
                 threads: int = 1, device: str = "cpu",
                 precision: str = "fp32", compile: str | bool = False, slice_batch: int = 1, shard: int = 0,
                 num_shards: int = 1, max_items: int | None = None, resume: bool = True) -> str:
    """The CT batch benchmark (module docstring); returns the summary table.

    Raises:
        MethodsFailed: a method failed on every slice of a setting (after the summary is written).
    """
    root = data.get("root")
    if root is None:
        root = ct_volumes(data.get("data_root", "data"), 64)
    dataset = CTFolder(Path(root), data.get("pattern", "*.h5"))
    return _batch_benchmark(dataset, name="ct", out_dir=out_dir, settings=settings, methods=methods, run=run,
                            run_settings=run_settings,
                            prior=prior, seed=seed, threads=threads, device=device, precision=precision,
                            compile_mode=compile, slice_batch=slice_batch, shard=shard, num_shards=num_shards,
                            max_items=max_items, slices=data.get("slices"), resume=resume)


__all__ = ["MethodsFailed", "build_methods", "ct_benchmark", "failed_everywhere", "mri_benchmark", "select_settings"]
