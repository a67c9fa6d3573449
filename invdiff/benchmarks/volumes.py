r"""Batch benchmarks over folders of volumes: fastMRI multi-coil MRI and CT (:mod:`invdiff.batch`).

``python scripts/benchmark.py benchmark=mri data.root=<folder of fastMRI h5 files>`` and
``benchmark=ct``; without ``data.root`` they run on the project's generated volumes
(``data/README.md``: ``mri_brain_fastmri_64/test`` and ``ct_volumes_64/test``).

**MRI** (:class:`FastMRIFolder`): each slice's k-space loses its twofold readout oversampling
(when the header's encoded size is twice the reconstruction size), is scaled so that the
fully sampled RSS image of the *volume* peaks at 1 (the scale the priors were trained on; it uses
the reference, as fastMRI's own ``max`` attribute does, and is undone before scoring), and is
masked with a fastMRI line mask seeded by the file name (:func:`operators.volume_seed`: the same
columns for every slice, as fastMRI's data sets do). Coil maps are ESPIRiT maps of the fully
sampled slice (as DDS and score-MRI compute them), cached in the run folder, turned so that the
coil-combined image has a mean phase of 0 (ESPIRiT's phase is relative to the first coil; the
priors were trained on images of near-zero mean phase). Outside the maps' support (ESPIRiT
zeroes them where its eigenvalue is under 0.95) the SENSE model sees no signal and the image is
undefined: every method's reconstruction is set to 0 there, as CG-SENSE's already is. The operator is
``MultiCoilMRI(maps, mask) @ RealToComplex()``; a reconstruction's magnitude, cropped to the
header's reconstruction size, is scored against ``reconstruction_rss``.

**CT** (:class:`CTFolder`): HDF5 files with a float ``image`` dataset ``(slices, H, W)`` in
relative attenuation; each slice is projected with a parallel beam (sparse views over 180° or a
limited wedge), with Gaussian noise of ``noise_std`` drawn from the slice's seed.

Methods are posterior samplers (``sampler``: a key of :data:`invdiff.samplers.SAMPLERS`, with
``steps``, ``schedule``, ``schedule_params`` and ``params``; the schedule spans the prior's
noise range unless ``schedule_params`` sets ``sigma_min`` or ``sigma_max``) with the benchmark's prior, or baselines (``baseline``: a
key of :data:`invdiff.samplers.BASELINES`, with ``params``).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor

from invdiff.batch import Shard, SliceProblem, markdown_summary, resolve_shard, run_batch

log = logging.getLogger(__name__)


def _h5_paths(root: Path, pattern: str) -> list[Path]:
    from invdiff.data.fastmri import MAPS_CACHE_SUFFIX

    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a folder")
    return [p for p in sorted(root.glob(pattern))
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(MAPS_CACHE_SUFFIX)]


# --------------------------------------------------------------------------------------------
# MRI
# --------------------------------------------------------------------------------------------


@dataclass
class _MRIVolume:
    path: Path
    name: str
    num_slices: int
    data_max: float
    recon_shape: tuple[int, int]
    oversampled: bool
    maps_dir: Path
    noise_std: float

    def problem(self, index: int, setting: dict, *, generator: torch.Generator) -> SliceProblem:
        from invdiff.data.fastmri import coil_maps, complex_center_crop, read_slice, remove_readout_oversampling
        from operators import MultiCoilMRI, RealToComplex, fastmri_mask, volume_seed
        from operators.mri import ifft2c

        s = read_slice(self.path, index)
        if s.reconstruction_rss is None:
            raise ValueError(f"{self.path}: no 'reconstruction_rss' to score against")
        kspace = remove_readout_oversampling(s.kspace) if self.oversampled else s.kspace
        scale = 1.0 / self.data_max
        kspace = kspace * scale
        H, W = kspace.shape[-2:]
        maps = coil_maps(kspace, self.maps_dir / f"{Path(self.name).stem}-{index:04d}.espirit.npy")
        # ESPIRiT's phase is relative to the first coil; turn the maps so that the coil-combined
        # image has a mean phase of 0, as the prior's training images do.
        combined = (maps.conj() * ifft2c(kspace)).sum(0)
        maps = maps * torch.exp(1j * torch.angle(combined.sum()))
        mask = fastmri_mask((H, W), setting["acceleration"], setting.get("center_fraction"),
                            kind=setting.get("mask_kind", "equispaced"), seed=volume_seed(self.name))
        op = MultiCoilMRI(maps, mask) @ RealToComplex()
        y = (kspace * mask)[None]
        target = s.reconstruction_rss.numpy()
        if target.shape != self.recon_shape:
            raise ValueError(f"{self.path}: reconstruction_rss slices are {target.shape}, header says {self.recon_shape}")

        support = maps.abs().square().sum(0) > 0

        def to_image(x: Tensor) -> np.ndarray:
            image = RealToComplex().A(x.detach().cpu().to(torch.float32))[0, 0] * support
            if tuple(image.shape) != self.recon_shape:
                image = complex_center_crop(image, self.recon_shape)
            return (image.abs() / scale).numpy()

        return SliceProblem(op, y, self.noise_std * scale, target, to_image)


class FastMRIFolder:
    """A folder of fastMRI multi-coil files (``kspace``, ``reconstruction_rss``, ``ismrmrd_header``)."""

    def __init__(self, root: Path, maps_dir: Path, *, noise_std: float, pattern: str = "*.h5"):
        if not noise_std > 0:
            raise ValueError(f"benchmark.noise_std: expected the k-space noise std (> 0), got {noise_std}")
        self.root, self.maps_dir, self.pattern, self.noise_std = Path(root), Path(maps_dir), pattern, noise_std

    def paths(self) -> list[Path]:
        return _h5_paths(self.root, self.pattern)

    def open(self, path: Path) -> _MRIVolume:
        from invdiff.data.fastmri import _open, _read_header, _recon_shape

        with _open(path) as f:
            if "kspace" not in f or "reconstruction_rss" not in f:
                raise ValueError(f"{path}: expected 'kspace' and 'reconstruction_rss' datasets, found {sorted(f.keys())}")
            kspace, target = f["kspace"], f["reconstruction_rss"]
            if kspace.ndim != 4 or kspace.dtype.kind != "c":
                raise ValueError(f"{path}: 'kspace' is {kspace.dtype} {kspace.shape}; expected complex (slices, coils, H, W)")
            header = _read_header(f, path, True)
            recon = _recon_shape(header, path)
            data_max = float(f.attrs["max"]) if "max" in f.attrs else float(np.max(target[()]))
            if not data_max > 0:
                raise ValueError(f"{path}: the reference volume's maximum is {data_max}; expected > 0")
            H = kspace.shape[-2]
            self.maps_dir.mkdir(parents=True, exist_ok=True)
            return _MRIVolume(path, path.name, kspace.shape[0], data_max, recon, H == 2 * recon[0], self.maps_dir,
                              self.noise_std)


# --------------------------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------------------------


@dataclass
class _CTVolume:
    path: Path
    name: str
    num_slices: int
    data_max: float

    def problem(self, index: int, setting: dict, *, generator: torch.Generator) -> SliceProblem:
        from invdiff.data.fastmri import _open
        from operators import ParallelBeamCT, limited_angle, sparse_view_angles

        with _open(self.path) as f:
            image = torch.from_numpy(np.asarray(f["image"][index], dtype=np.float32))
        size = tuple(image.shape)
        views = int(setting["views"])
        wedge = setting.get("angle_range")
        angles = sparse_view_angles(views) if wedge is None else limited_angle(views, math.radians(wedge))
        op = ParallelBeamCT(size, angles)
        clean = op.A(image[None, None])
        y = clean + setting["noise_std"] * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)

        def to_image(x: Tensor) -> np.ndarray:
            return x.detach().cpu().to(torch.float32)[0, 0].numpy()

        return SliceProblem(op, y, setting["noise_std"], image.numpy(), to_image)


class CTFolder:
    """A folder of CT volumes: HDF5 files with a float ``image`` dataset ``(slices, H, W)``."""

    def __init__(self, root: Path, pattern: str = "*.h5"):
        self.root, self.pattern = Path(root), pattern

    def paths(self) -> list[Path]:
        return _h5_paths(self.root, self.pattern)

    def open(self, path: Path) -> _CTVolume:
        from invdiff.data.fastmri import _open

        with _open(path) as f:
            if "image" not in f:
                raise ValueError(f"{path}: no 'image' dataset (found {sorted(f.keys())})")
            ds = f["image"]
            if ds.ndim != 3 or ds.dtype.kind != "f":
                raise ValueError(f"{path}: 'image' is {ds.dtype} {ds.shape}; expected float (slices, H, W)")
            data_max = float(f.attrs["max"]) if "max" in f.attrs else float(np.max(ds[()]))
            if not data_max > 0:
                raise ValueError(f"{path}: the volume's maximum is {data_max}; expected > 0")
            return _CTVolume(path, path.name, ds.shape[0], data_max)


def ct_volumes(root: str | Path, size: int = 64, *, slab: int = 2, count: int = 4, split: str = "test") -> Path:
    """CT volumes for the batch benchmark from the held-out CT images: ``root/ct_volumes_{size}/{split}``.

    The first ``count`` images of the split (:func:`invdiff.data.datasets.ct`) in volumes of ``slab``
    slices, ``image`` float32 with the attribute ``max``; complete files are reused, each written atomically.
    """
    from invdiff.data.datasets import DATASETS, load_split
    from invdiff.fileio import atomic_write

    images = np.asarray(load_split(DATASETS["ct"](root, size=size, splits=(split,)), split)[:count, 0], np.float32)
    folder = Path(root) / f"ct_volumes_{size}" / split
    folder.mkdir(parents=True, exist_ok=True)
    for v, start in enumerate(range(0, images.shape[0] - slab + 1, slab)):
        path = folder / f"ct_{split}_{v:03d}.h5"
        if path.is_file():
            continue
        volume = images[start : start + slab]

        def write(tmp: Path, volume=volume) -> None:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("image", data=volume)
                f.attrs["max"] = float(volume.max())

        atomic_write(path, write)
    return folder


# --------------------------------------------------------------------------------------------
# Methods and the benchmark entry points
# --------------------------------------------------------------------------------------------


def _check_params(fn, params: dict, where: str, given: int, fixed: Sequence[str] = ()) -> None:
    """Raise before any slice runs when ``params`` names an argument ``fn`` does not take; the
    first ``given`` arguments and the names in ``fixed`` are passed by the benchmark itself."""
    accepted = list(inspect.signature(fn).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted):
        return
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    options = [p.name for p in accepted[given:] if p.kind in keyword and p.name not in fixed]
    unknown = sorted(set(params) - set(options))
    if unknown:
        raise ValueError(f"{where}.params: {unknown} are not options of {fn.__name__}; expected some of {options}")


def build_methods(methods: dict[str, dict], prior_name: str | None, device: str = "cpu") -> dict:
    """``{name: (problem, generator) -> (x, info)}`` from the config's ``methods`` entries.

    Unknown samplers, baselines, schedules and keyword options raise here, naming the config key,
    before any slice runs.
    """
    from invdiff.samplers import BASELINES, SAMPLERS
    from invdiff.schedules import SCHEDULES, make_sigmas

    built = {}
    denoiser = None
    for name, entry in methods.items():
        entry = dict(entry)
        params = dict(entry.get("params") or {})
        if "baseline" in entry:
            key = entry["baseline"]
            if key not in BASELINES:
                raise ValueError(f"methods.{name}.baseline: {key!r} is not one of {sorted(BASELINES)}")
            fn = BASELINES[key]
            _check_params(fn, params, f"methods.{name}", 2)

            def run(problem, generator, fn=fn, params=params):
                return fn(problem.op, problem.y, **params)

        elif "sampler" in entry:
            key = entry["sampler"]
            if key not in SAMPLERS:
                raise ValueError(f"methods.{name}.sampler: {key!r} is not one of {sorted(SAMPLERS)}")
            fn = SAMPLERS[key]
            _check_params(fn, params, f"methods.{name}", 4, ("noise_std", "generator"))
            schedule = entry.get("schedule", "vp")
            if schedule not in SCHEDULES:
                raise ValueError(f"methods.{name}.schedule: {schedule!r} is not one of {sorted(SCHEDULES)}")
            if denoiser is None:
                if prior_name is None:
                    raise ValueError(f"methods.{name}: a sampler needs the benchmark's prior; set benchmark.prior")
                from invdiff.priors.packaged import load_packaged

                denoiser = load_packaged(prior_name).to(device)
            steps = int(entry.get("steps", 50))
            # The prior's noise range unless schedule_params narrows it (e.g. sigma_max).
            schedule_params = {"sigma_min": denoiser.sigma_min, "sigma_max": denoiser.sigma_max,
                               **dict(entry.get("schedule_params") or {})}
            try:
                sigmas = make_sigmas(schedule, steps, **schedule_params)
            except TypeError as err:
                raise ValueError(f"methods.{name}.schedule_params: {err}") from None

            def run(problem, generator, fn=fn, params=params, sigmas=sigmas):
                op, y = problem.op, problem.y.to(device)
                if device != "cpu":
                    op = op.to(device) if hasattr(op, "to") else op
                g = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (), generator=generator)))
                x, info = fn(denoiser, op, y, sigmas.to(device), noise_std=problem.noise_std, generator=g, **params)
                return x.cpu(), info

        else:
            raise ValueError(f"methods.{name}: expected a 'sampler' or a 'baseline' key, got {sorted(entry)}")
        built[name] = run
    return built


def _batch_benchmark(dataset, *, name: str, out_dir: str, settings: dict, methods: dict, run: Sequence[str] | None,
                     prior: str | None, seed: int, threads: int, device: str, shard: int, num_shards: int,
                     max_items: int | None, slices: Sequence[int] | None) -> str:
    torch.set_num_threads(int(threads))
    names = list(run or methods)
    unknown = [m for m in names if m not in methods]
    if unknown:
        raise ValueError(f"benchmark {name}: run: {unknown} have no entry under methods (configured: {', '.join(methods)})")
    where = resolve_shard(shard, num_shards)
    if device == "cuda" and where.distributed:
        device = f"cuda:{where.local_rank}"
    built = build_methods({m: methods[m] for m in names}, prior, device)
    result = run_batch(dataset, built, dict(settings), Path(out_dir), seed=seed, shard=where, slices=slices,
                       max_items=max_items)
    if not result.summary:
        return f"shard {where.index} of {where.count}: {result.done} slices done; rank 0 writes the summary"
    return f"{name} benchmark, {result.summary['rows']} slice rows in {out_dir}\n\n" + markdown_summary(result.summary)


def mri_benchmark(*, data: dict, out_dir: str, settings: dict, methods: dict, run: Sequence[str] | None = None,
                  prior: str | None = "mri_brain_64", noise_std: float = 0.002, seed: int = 0, threads: int = 1, device: str = "cpu",
                  shard: int = 0, num_shards: int = 1, max_items: int | None = None) -> str:
    """The fastMRI batch benchmark (module docstring); returns the summary table."""
    root = data.get("root")
    if root is None:
        from invdiff.data.datasets import DATASETS_FASTMRI

        root = DATASETS_FASTMRI["mri_brain_fastmri"](data.get("data_root", "data"), size=64, split="test")
    dataset = FastMRIFolder(Path(root), Path(out_dir) / "coil_maps", noise_std=float(noise_std),
                            pattern=data.get("pattern", "*.h5"))
    return _batch_benchmark(dataset, name="mri", out_dir=out_dir, settings=settings, methods=methods, run=run,
                            prior=prior, seed=seed, threads=threads, device=device, shard=shard,
                            num_shards=num_shards, max_items=max_items, slices=data.get("slices"))


def ct_benchmark(*, data: dict, out_dir: str, settings: dict, methods: dict, run: Sequence[str] | None = None,
                 prior: str | None = "ct_64", seed: int = 0, threads: int = 1, device: str = "cpu",
                 shard: int = 0, num_shards: int = 1, max_items: int | None = None) -> str:
    """The CT batch benchmark (module docstring); returns the summary table."""
    root = data.get("root")
    if root is None:
        root = ct_volumes(data.get("data_root", "data"), 64)
    dataset = CTFolder(Path(root), data.get("pattern", "*.h5"))
    return _batch_benchmark(dataset, name="ct", out_dir=out_dir, settings=settings, methods=methods, run=run,
                            prior=prior, seed=seed, threads=threads, device=device, shard=shard,
                            num_shards=num_shards, max_items=max_items, slices=data.get("slices"))


__all__ = ["CTFolder", "FastMRIFolder", "Shard", "build_methods", "ct_benchmark", "ct_volumes", "mri_benchmark"]
