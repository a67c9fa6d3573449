"""Samplers: posterior samplers, unconditional samplers and classical baselines, by name.

* :data:`SAMPLERS`: ``(denoiser, op, y, sigmas, *, noise_std, generator, **hyper) -> (x, info)``.
* :data:`UNCONDITIONAL`: ``(denoiser, sigmas, *, shape, generator, callback=None) -> (x, info)``.
* :data:`BASELINES`: ``(op, y, **options) -> (x, info)``.

``info`` always holds ``nfe`` (network evaluations) and ``seconds``.
"""

from __future__ import annotations

from collections.abc import Callable

from invdiff.samplers.baselines import (
    adjoint_baseline,
    error_reduction,
    fbp_baseline,
    l1_wavelet,
    least_squares,
    pinv_baseline,
    postlog_fbp,
    tv,
    zero_filled,
)
from invdiff.samplers.ads import sample_ads
from invdiff.samplers.common import ddim_coefficients, ddim_step
from invdiff.samplers.daps import sample_daps
from invdiff.samplers.dds import sample_dds
from invdiff.samplers.ddrm import sample_ddnm, sample_ddrm
from invdiff.samplers.deepinv_samplers import sample_deepinv_diffpir, sample_deepinv_dps
from invdiff.samplers.diffpir import sample_diffpir
from invdiff.samplers.dps import sample_dps
from invdiff.samplers.fps import sample_fps
from invdiff.samplers.mcgdiff import sample_mcgdiff
from invdiff.samplers.mbir import sample_dds3d, sample_diffusion_mbir, sample_diffusion_mbir_paper
from invdiff.samplers.pigdm import sample_pigdm
from invdiff.samplers.reddiff import sample_reddiff
from invdiff.samplers.smc import sample_afdps, sample_smc_ensemble, sample_tds
from invdiff.samplers.unconditional import (
    sample_ddim,
    sample_deis,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sample_unipc,
)

SAMPLERS: dict[str, Callable] = {
    "dps": sample_dps,
    "dds": sample_dds,
    "diffusion_mbir": sample_diffusion_mbir,
    "diffusion_mbir_paper": sample_diffusion_mbir_paper,
    "dds3d": sample_dds3d,
    "reddiff": sample_reddiff,
    "smc_ensemble": sample_smc_ensemble,
    "twisted_ensemble": sample_smc_ensemble,
    "afdps": sample_afdps,
    "tds": sample_tds,
    "fps": sample_fps,
    "mcgdiff": sample_mcgdiff,
    "deepinv_dps": sample_deepinv_dps,
    "deepinv_diffpir": sample_deepinv_diffpir,
    "daps": sample_daps,
    "pigdm": sample_pigdm,
    "diffpir": sample_diffpir,
    "ddrm": sample_ddrm,
    "ddnm": sample_ddnm,
    "ads": sample_ads,
}
UNCONDITIONAL: dict[str, Callable] = {
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
    "deis": sample_deis,
}
BASELINES: dict[str, Callable] = {
    "adjoint": adjoint_baseline,
    "cg": least_squares,
    "pinv": pinv_baseline,
    "fbp": fbp_baseline,
    "postlog_fbp": postlog_fbp,
    "error_reduction": error_reduction,
    "zero_filled": zero_filled,
    "l1_wavelet": l1_wavelet,
    "tv": tv,
}


def get_sampler(name: str) -> Callable:
    """The function registered as ``name`` in :data:`SAMPLERS`, :data:`UNCONDITIONAL` or :data:`BASELINES`."""
    for registry in (SAMPLERS, UNCONDITIONAL, BASELINES):
        if name in registry:
            return registry[name]
    available = ", ".join(sorted({**SAMPLERS, **UNCONDITIONAL, **BASELINES}))
    raise ValueError(f"unknown sampler {name!r}; available: {available}")


__all__ = [
    "BASELINES",
    "SAMPLERS",
    "UNCONDITIONAL",
    "adjoint_baseline",
    "ddim_coefficients",
    "ddim_step",
    "sample_ddnm",
    "sample_ddrm",
    "error_reduction",
    "fbp_baseline",
    "get_sampler",
    "l1_wavelet",
    "least_squares",
    "pinv_baseline",
    "postlog_fbp",
    "sample_ads",
    "sample_daps",
    "sample_dds",
    "sample_ddim",
    "sample_deis",
    "sample_deepinv_diffpir",
    "sample_deepinv_dps",
    "sample_diffpir",
    "sample_dds3d",
    "sample_diffusion_mbir",
    "sample_diffusion_mbir_paper",
    "sample_dpmpp_2m",
    "sample_dps",
    "sample_fps",
    "sample_mcgdiff",
    "sample_euler",
    "sample_heun",
    "sample_pigdm",
    "sample_reddiff",
    "sample_afdps",
    "sample_smc_ensemble",
    "sample_tds",
    "sample_unipc",
    "tv",
    "zero_filled",
]
