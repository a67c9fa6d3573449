r"""Training a denoiser with the EDM loss (Karras et al. 2022), resumable and reproducible.

Each step draws a batch of training images and noise levels
:math:`\ln\sigma \sim \mathcal N(P_{mean}, P_{std}^2)` and minimises

.. math:: \lambda(\sigma)\, \| D(x_0 + \sigma n, \sigma) - x_0 \|^2, \qquad
          \lambda(\sigma) = (\sigma^2 + \sigma_d^2) / (\sigma \sigma_d)^2,

averaged over pixels and the batch, with Adam and an exponential moving average (EMA) of the
weights. All randomness comes from one ``torch.Generator`` whose state is saved with the
weights, the EMA and the optimiser, so a run stopped and resumed from its checkpoint ends with
the same weights and the same ``loss.csv`` steps and losses as a run that never stopped. The initial weights
come from their own seed (:func:`invdiff.priors.unet.edm_unet`; ``scripts/train_prior.py`` passes
``train.seed``).

Patch training (``TrainConfig.patch_size``), after Hu et al. 2024, "Learning image priors through
patch-based diffusion models for solving inverse problems": each image of a batch is replaced by a
random ``P x P`` window of it, its position drawn from the same generator, so a convolutional
network learns the statistics of native-resolution images (e.g. 233 x 233 brain slices at 1 mm,
512 x 512 CT slices) at the cost of ``P x P`` inputs, and runs on the whole images afterwards. Unlike
Hu et al., the patch's position is not given to the network as extra channels: a network with
position channels is tied to one image size and placement, whereas a position-free one is
translation-equivariant (away from its borders) and serves a 64 x 64 crop and a full image alike,
which is what the run layer's size handling (any multiple of ``size_multiple``) expects.
"""

from __future__ import annotations

import copy
import csv
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from invdiff.fileio import atomic_write
from invdiff.priors.adapters import EDMDenoiser


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        steps: the total number of optimiser steps.
        batch_size: images per step.
        lr: Adam's learning rate (after a linear warm-up of ``warmup`` steps).
        warmup: warm-up steps.
        ema_decay: the EMA's decay per step, reached after a warm-up ``(1 + t) / (10 + t)``.
        p_mean, p_std: the log-normal distribution of training noise levels.
        flip: augment with random left-right flips.
        seed: seeds the generator of batches, noise levels and noise.
        checkpoint_every: steps between checkpoints (and at the end).
        log_every: steps between rows of ``loss.csv``.
        patch_size: train on random ``patch_size x patch_size`` windows of the images instead of
            the whole images (``None``); at most the images' size and a multiple of the network's
            ``size_multiple`` (checked by :func:`train`, which sees both).

    Raises:
        ValueError: naming ``train.<key>``: ``steps``, ``batch_size``, ``checkpoint_every`` or
            ``log_every`` not a positive integer, ``warmup`` not a non-negative one, ``seed``
            not an integer, ``lr`` or ``p_std`` not finite and positive, ``p_mean`` not finite,
            ``ema_decay`` outside ``[0, 1)``, ``flip`` not a bool, ``patch_size`` neither ``None``
            nor a positive integer. Whole floats (``4000.0``) are taken as integers.
    """

    steps: int = 10_000
    batch_size: int = 16
    lr: float = 2e-4
    warmup: int = 200
    ema_decay: float = 0.999
    p_mean: float = -1.2
    p_std: float = 1.2
    flip: bool = True
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    patch_size: int | None = None

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
            setattr(self, key, _integer(key, getattr(self, key), 1, "a positive integer"))
        self.warmup = _integer("warmup", self.warmup, 0, "a non-negative integer")
        self.seed = _integer("seed", self.seed, None, "an integer")
        self.lr = _number("lr", self.lr, lambda v: v > 0, "a finite positive number")
        self.p_std = _number("p_std", self.p_std, lambda v: v > 0, "a finite positive number")
        self.p_mean = _number("p_mean", self.p_mean, lambda v: True, "a finite number")
        self.ema_decay = _number("ema_decay", self.ema_decay, lambda v: 0 <= v < 1, "a number in [0, 1)")
        if not isinstance(self.flip, bool):
            raise ValueError(f"train.flip: expected true or false, got {self.flip!r}")
        if self.patch_size is not None:
            self.patch_size = _integer("patch_size", self.patch_size, 1, "null or a positive integer")


def _integer(key: str, value: object, minimum: int | None, expected: str) -> int:
    """``value`` as an ``int`` (an integer or a whole float) of at least ``minimum``; else a
    ``ValueError`` naming ``train.<key>``."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or (minimum is not None and value < minimum):
        raise ValueError(f"train.{key}: expected {expected}, got {value!r}")
    return int(value)


def _number(key: str, value: object, accept: Callable[[float], bool], expected: str) -> float:
    """``value`` as a finite ``float`` that ``accept`` takes; else a ``ValueError`` naming ``train.<key>``."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or not accept(value):
        raise ValueError(f"train.{key}: expected {expected}, got {value!r}")
    return float(value)


def edm_loss(denoiser: EDMDenoiser, x0: Tensor, log_sigma: Tensor, noise: Tensor) -> Tensor:
    """The EDM-weighted denoising loss of a batch, a scalar."""
    sigma = log_sigma.exp()
    sd2 = denoiser.sigma_data**2
    weight = (sigma.square() + sd2) / (sigma * denoiser.sigma_data).square()
    x0_hat = denoiser(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma)
    return (weight.view(-1, 1, 1, 1) * (x0_hat - x0).square()).mean()


def random_windows(data, idx: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Random ``size x size`` windows of the images ``data[idx]``, one each, positions drawn from ``g``.

    Only the windows are read, so a memory-mapped dataset of large images is not loaded whole.

    Args:
        data: ``(N, C, H, W)`` images, a tensor or a numpy array (possibly memory-mapped).
        idx: ``(B,)`` image indices.
        size: the window side, at most ``H`` and ``W``.
        g: the generator of the positions: ``top`` then ``left``, each ``(B,)``.

    Returns:
        ``(B, C, size, size)`` float32.
    """
    H, W = data.shape[-2:]
    top = torch.randint(H - size + 1, (idx.shape[0],), generator=g)
    left = torch.randint(W - size + 1, (idx.shape[0],), generator=g)
    corners = zip(idx.tolist(), top.tolist(), left.tolist())
    windows = [data[i, :, t : t + size, s : s + size] for i, t, s in corners]
    if not isinstance(data, Tensor):
        windows = [torch.from_numpy(np.array(w)) for w in windows]
    return torch.stack(windows).float()


def _draw(data: Tensor, cfg: TrainConfig, g: torch.Generator, device: torch.device):
    idx = torch.randint(data.shape[0], (cfg.batch_size,), generator=g)
    if cfg.patch_size is not None:
        x0 = random_windows(data, idx, cfg.patch_size, g)
    else:
        x0 = torch.as_tensor(data[idx.numpy()] if not isinstance(data, Tensor) else data[idx]).float()
    if cfg.flip:
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
    log_sigma = cfg.p_mean + cfg.p_std * torch.randn(cfg.batch_size, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return x0.to(device), log_sigma.to(device), noise.to(device)


def check_patch_size(cfg: TrainConfig, data_shape, denoiser: EDMDenoiser) -> None:
    """Refuse a ``cfg.patch_size`` that the images or the network cannot take.

    Args:
        cfg: the settings.
        data_shape: the training images' ``(N, C, H, W)``.
        denoiser: the network to train.

    Raises:
        ValueError: naming ``train.patch_size``: larger than ``H`` or ``W``, not a multiple of the
            network's ``size_multiple``, or unlike the training size the denoiser declares
            (``shape``, from the network's ``img_resolution``).
    """
    P = cfg.patch_size
    if P is None:
        return
    H, W = (int(s) for s in data_shape[-2:])
    if P > min(H, W):
        raise ValueError(f"train.patch_size: expected at most the images' size {H} x {W}, got {P}")
    m = denoiser.size_multiple
    if m is not None and P % m:
        raise ValueError(f"train.patch_size: expected a multiple of the network's size_multiple {m}, got {P}")
    if denoiser.shape is not None and tuple(denoiser.shape[1:]) != (P, P):
        raise ValueError(
            f"train.patch_size: {P}, but the network declares a training size of {denoiser.shape[1]} x "
            f"{denoiser.shape[2]}; build it with img_resolution={P}"
        )


def _save(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


_LOG_HEADER = ("step", "loss", "seconds")


def _restart_log(path: Path, step: int) -> None:
    """Rewrite the loss log at ``path`` (atomically) with its header and its rows up to ``step``.

    A run stopped after its last checkpoint has logged steps that the resumed run logs again;
    those rows, a partly written last row among them, are dropped. A fresh run (``step = 0``)
    starts an empty log.
    """
    rows = []
    if step and path.is_file():
        with path.open(newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if len(r) == 3 and r[0].isdigit()]
        rows = [r for r in rows if int(r[0]) <= step]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows([_LOG_HEADER, *rows])

    atomic_write(path, write)


def train(
    denoiser: EDMDenoiser,
    data: Tensor,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    on_checkpoint: Callable[[int, EDMDenoiser], None] | None = None,
) -> EDMDenoiser:
    """Train ``denoiser`` on ``data``, resuming from ``out_dir/checkpoint.pt`` when it exists.

    Args:
        denoiser: the network with its preconditioning; trained in place.
        data: ``(N, C, H, W)`` training images in the denoiser's data space (a tensor or a numpy
            array, possibly memory-mapped); with ``cfg.patch_size``, each step takes random windows
            of them (:func:`random_windows`), so ``H, W`` may be any size of at least the patch.
        out_dir: holds ``checkpoint.pt`` (weights, EMA, optimiser, step, generator state, the
            loss sum since the last logged row) and ``loss.csv`` (``step, loss, seconds``: the mean
            loss since the previous row, seconds since this call began). A resumed run first drops
            the rows after its checkpoint's step, so each step is logged once, as in a run that
            never stopped.
        cfg: the optimisation settings; a resumed run must use the same ones.
        device: where to train.
        on_step: called after every step with the step number (1-based) and the loss.
        on_checkpoint: called after every checkpoint with the step and the EMA denoiser.

    Returns:
        The EMA denoiser.

    Raises:
        ValueError: a ``cfg.patch_size`` the data or the network cannot take (:func:`check_patch_size`),
            or a checkpoint saved with other settings.
    """
    check_patch_size(cfg, data.shape, denoiser)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    denoiser = denoiser.to(device).train()
    ema = copy.deepcopy(denoiser).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    step, running, count = 0, 0.0, 0
    path = out_dir / "checkpoint.pt"
    if path.is_file():
        state = torch.load(path, map_location=device, weights_only=True)
        if state["config"] != asdict(cfg):
            changed = {k: (state["config"].get(k), v) for k, v in asdict(cfg).items() if state["config"].get(k) != v}
            if set(changed) - {"steps", "checkpoint_every", "log_every"}:
                raise ValueError(f"{path}: saved with other settings (saved, now): {changed}")
        denoiser.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        step = int(state["step"])
        saved_sum, saved_count = state.get("log", (0.0, 0))  # a checkpoint without it: a fresh sum
        running, count = float(saved_sum), int(saved_count)
    _restart_log(out_dir / "loss.csv", step)
    log = (out_dir / "loss.csv").open("a", newline="")
    writer = csv.writer(log)
    start = time.perf_counter()
    try:
        while step < cfg.steps:
            # 1. A batch, its noise levels and its noise, all from the saved generator.
            x0, log_sigma, noise = _draw(data, cfg, g, device)
            # 2. One Adam step on the EDM loss, with linear warm-up.
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
            loss = edm_loss(denoiser, x0, log_sigma, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # 3. EMA of the weights, its decay warming up so early weights fade fast.
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), denoiser.parameters()):
                    p_ema.lerp_(p, 1 - decay)
            step += 1
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"train: the loss is {value} at step {step}")
            running, count = running + value, count + 1
            if on_step is not None:
                on_step(step, value)
            if step % cfg.log_every == 0 or step == cfg.steps:
                writer.writerow([step, f"{running / count:.6f}", f"{time.perf_counter() - start:.1f}"])
                log.flush()
                running, count = 0.0, 0
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _save(path, {
                    "model": denoiser.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": g.get_state(), "step": step, "config": asdict(cfg), "log": [running, count],
                })
                if on_checkpoint is not None:
                    on_checkpoint(step, ema)
    finally:
        log.close()
    return ema
