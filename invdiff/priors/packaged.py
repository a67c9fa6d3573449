"""Priors trained by this project and shipped inside the package (``invdiff/priors/weights/``).

Each ``<name>.safetensors`` holds the EMA weights in half precision with the architecture in its
metadata, and ``<name>.md`` is its model card (data, command, steps, training time, denoising
PSNR per noise level on held-out data).
"""

from __future__ import annotations

from pathlib import Path

from invdiff.priors.base import Denoiser

WEIGHTS = Path(__file__).resolve().parent / "weights"


def available() -> list[str]:
    """Names of the shipped priors."""
    return sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))


def load_packaged(name: str) -> Denoiser:
    """The shipped prior ``name`` (see :func:`available`), on the CPU in float32.

    Its ``source`` is ``"packaged:<name>"``.
    """
    from invdiff.priors.unet import load_prior

    path = WEIGHTS / f"{name}.safetensors"
    if not path.is_file():
        raise ValueError(f"name: expected one of the shipped priors {available()}, got {name!r} (no {path.name})")
    denoiser = load_prior(path)
    denoiser.source = f"packaged:{name}"
    return denoiser
