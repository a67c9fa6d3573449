"""Draw unconditional samples from a prior and save a grid:
``python scripts/sample_prior.py prior=mri +unconditional=heun +steps=24 +count=16 +out=samples.png``.

Uses the reconstruction config's ``prior`` group (and its ``task`` for the image size), and one
of ``invdiff.samplers.UNCONDITIONAL`` on the EDM (Karras) schedule over the prior's noise range.
"""

from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from invdiff.figures import image_grid
from invdiff.run import resolve_device
from invdiff.samplers import UNCONDITIONAL
from invdiff.schedules import sigmas_karras


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    name = cfg.get("unconditional", "heun")
    steps, count = int(cfg.get("steps", 24)), int(cfg.get("count", 16))
    out = Path(cfg.get("out", "samples.png"))
    if name not in UNCONDITIONAL:
        raise ValueError(f"unconditional: expected one of {sorted(UNCONDITIONAL)}, got {name!r}")
    prior = instantiate(cfg.prior).to(resolve_device(cfg.device))
    shape = (count, *(prior.shape or (1, cfg.task.size, cfg.task.size)))
    sigmas = sigmas_karras(steps, sigma_min=prior.sigma_min, sigma_max=prior.sigma_max)
    x, info = UNCONDITIONAL[name](prior, sigmas, shape=shape, generator=torch.Generator().manual_seed(cfg.seed))
    x = x.float().cpu()
    images = torch.hypot(x[:, 0], x[:, 1]) if x.shape[1] == 2 else x[:, 0]
    image_grid(images.clamp_min(0), out, title=f"{name}, {info['nfe']} NFE")
    print(f"{count} samples, {info['nfe']} NFE, {info['seconds']:.1f} s -> {out}")


if __name__ == "__main__":
    main()
