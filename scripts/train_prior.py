"""Train the project's UNet prior: ``python scripts/train_prior.py data=data/mri_brain_64``.

The initial weights and every random draw of training come from ``train.seed``, so two fresh runs
with the same settings train the same network. Resumes from ``out_dir/checkpoint.pt``; writes ``loss.csv``, sample grids
``samples_<step>.png`` (Heun from the EMA weights) and, with ``export=<file>``, the EMA prior in
half precision at every checkpoint.

With ``train.patch_size=P`` it trains on random ``P x P`` windows of the images (e.g. a native-resolution
dataset, ``data=data/mri_brain_native``): the network's ``img_resolution`` becomes ``P``, the prior is
marked as trained on patches, and the sample grids are ``P x P``.
"""

import copy
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from invdiff.data.datasets import load_split
from invdiff.figures import image_grid
from invdiff.run import resolve_device
from invdiff.priors.unet import edm_unet, save_prior
from invdiff.samplers import sample_heun
from invdiff.schedules import sigmas_karras
from invdiff.training import TrainConfig, train


def display(x: torch.Tensor) -> torch.Tensor:
    """Magnitudes of 2-channel complex images, or the first channel of real ones."""
    return torch.hypot(x[:, 0], x[:, 1]) if x.shape[1] == 2 else x[:, 0]


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    train_cfg = TrainConfig(**cfg.train)
    every = cfg.samples.every
    if type(every) is not int or every < 1 or every % train_cfg.checkpoint_every:
        raise ValueError(
            f"samples.every: expected a positive multiple of train.checkpoint_every "
            f"({train_cfg.checkpoint_every}), got {every!r}"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(cfg.out_dir)
    data = load_split(cfg.data, "train")
    device = resolve_device(cfg.device)
    network = OmegaConf.to_container(cfg.network)
    patch = train_cfg.patch_size
    if patch is not None:
        network["img_resolution"] = patch
    denoiser = edm_unet(in_channels=data.shape[1], sigma_data=cfg.sigma_data, seed=train_cfg.seed,
                        patches=patch is not None, **network)

    def on_checkpoint(step: int, ema) -> None:
        if cfg.export:
            save_prior(Path(cfg.export), copy.deepcopy(ema).cpu().half())
        if step % cfg.samples.every == 0 or step == train_cfg.steps:
            side = (data.shape[2], data.shape[3]) if patch is None else (patch, patch)
            shape = (cfg.samples.count, data.shape[1], *side)
            x, _ = sample_heun(ema, sigmas_karras(cfg.samples.steps), shape=shape,
                               generator=torch.Generator(device).manual_seed(0))
            image_grid(display(x.float().cpu()).clamp_min(0), out_dir / f"samples_{step:06d}.png",
                       title=f"EMA samples, step {step}, Heun {cfg.samples.steps} steps")

    print(f"{sum(p.numel() for p in denoiser.parameters()) / 1e6:.2f} M parameters, {data.shape[0]} training images")
    with tqdm(total=train_cfg.steps, desc="train") as bar:
        def on_step(step: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(0)

        train(denoiser, data, out_dir, train_cfg, device=device, on_step=on_step, on_checkpoint=on_checkpoint)


if __name__ == "__main__":
    main()
