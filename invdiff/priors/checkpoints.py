r"""Checkpoint loaders by layout, each returning a :class:`~invdiff.priors.base.Denoiser`.

=============  ==================================================================================
layout         file
=============  ==================================================================================
``invdiff``    invdiff's own format (:func:`invdiff.priors.unet.save_prior`)
``adm``        a guided-diffusion ``UNetModel`` state dict (DPS ``ffhq_10m.pt``, DDS fastMRI)
``edm``        an EDM network state dict in deepinv's key layout (``ADMUNet`` / ``NCSNpp``)
``diffusers``  a diffusers ``UNet2DModel`` folder (``config.json`` + safetensors weights)
=============  ==================================================================================

Nothing is downloaded: a missing file is an error that names the path, and so is an empty, a
truncated or an unreadable one. Files are read with
``torch.load(..., map_location="cpu", weights_only=True)`` or safetensors, so a file that would
unpickle arbitrary objects is refused. Keys are matched strictly; a mismatch names the missing
and the unexpected keys. NVlabs' original EDM ``.pkl`` files pickle whole Python objects and
are therefore refused: convert them to a state dict first (deepinv's converted weights load).

Loaded networks are on the CPU, in eval mode, with ``requires_grad`` off (gradients still flow
to the input, as guidance needs).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from invdiff.priors.adapters import ScaledDenoiser, VPDenoiser, range_affine
from invdiff.priors.adm import ADM_CONFIGS, ADMUNet
from invdiff.priors.base import Denoiser
from invdiff.priors.unet import load_prior, require_safetensors
from invdiff.schedules import vp_alphas_cumprod

_A = TypeVar("_A", VPDenoiser, ScaledDenoiser)

_SHOW = 5  # keys listed in a mismatch message


def require_file(path: str | os.PathLike, layout: str) -> Path:
    """``path`` as a ``Path``; ``FileNotFoundError`` naming it and where to put it if it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{layout} checkpoint not found: {path} (absolute: {path.resolve()}). Place the checkpoint file "
            f"there, or set prior.path=... to where it is; invdiff never downloads weights."
        )
    return path


def _require_content(path: Path, expected: str) -> None:
    """``ValueError`` naming ``path`` when the file is empty."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: an empty file, expected {expected} (an interrupted copy or download?)")


def read_checkpoint(path: str | os.PathLike) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file.

    Raises:
        ValueError: the file is empty, holds arbitrary pickled objects (refused), or is not a
            readable torch file (truncated, or written by something other than ``torch.save``).
    """
    path = Path(path)
    _require_content(path, "a torch checkpoint (torch.save)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused to load, it is not a plain state dict of tensors (weights_only=True forbids "
            f"unpickling arbitrary objects; re-save it as a state dict): {exc}"
        ) from exc
    except (FileNotFoundError, PermissionError):
        raise
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(
            f"{path}: not a readable torch checkpoint (truncated, or not written by torch.save?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the metadata of a ``.safetensors`` file, with errors that name the file.

    Returns:
        The state dict (on the CPU) and the metadata (``{}`` when the file has none).

    Raises:
        ValueError: the file is empty or not a readable safetensors file (truncated, or another
            format under a ``.safetensors`` name).
    """
    st = require_safetensors()
    from safetensors import SafetensorError

    path = Path(path)
    _require_content(path, "a safetensors file")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except SafetensorError as exc:
        raise ValueError(
            f"{path}: not a readable safetensors file (truncated, or not safetensors?): {exc}"
        ) from exc


def is_state_dict(obj: object) -> bool:
    """``obj`` is a non-empty dict from strings to tensors."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from a ``.pt``/``.pth`` (weights only) or ``.safetensors`` file.

    A state dict nested once under ``"state_dict"``, ``"model"``, ``"ema"`` or ``"net"`` is taken
    from there, and a ``"module."`` prefix on every key (``DataParallel``) is removed.

    Raises:
        ValueError: the file is unreadable (:func:`read_checkpoint`, :func:`read_safetensors`) or
            holds no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        obj: object = read_safetensors(path)[0]
    else:
        obj = read_checkpoint(path)
    if not is_state_dict(obj) and isinstance(obj, dict):
        nested = [obj[k] for k in ("state_dict", "model", "ema", "net") if is_state_dict(obj.get(k))]
        obj = nested[0] if nested else obj
    if not is_state_dict(obj):
        what = f"a dict with keys {list(obj)[:_SHOW]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ValueError(f"{path}: expected a state dict (str -> Tensor), found {what}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, Tensor], path: str | os.PathLike) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a readable mismatch message.

    Raises:
        ValueError: keys missing from or unexpected in ``state_dict`` (first few of each and the
            counts), or tensors of the wrong shape.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{path}: state dict does not match {type(module).__name__}: {len(missing)} missing keys "
            f"{missing[:_SHOW]}{' ...' if len(missing) > _SHOW else ''}, {len(unexpected)} unexpected keys "
            f"{unexpected[:_SHOW]}{' ...' if len(unexpected) > _SHOW else ''}; check the architecture config"
        )
    wrong = [
        f"{k}: {tuple(v.shape)} in file, {tuple(expected[k].shape)} expected"
        for k, v in state_dict.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise ValueError(
            f"{path}: {len(wrong)} tensors have the wrong shape for {type(module).__name__}, e.g. "
            f"{wrong[:_SHOW]}; check the architecture config"
        )
    module.load_state_dict(state_dict, strict=True)


def _with_range(denoiser: _A, model_range: tuple[float, float]) -> _A:
    """Record on ``denoiser`` the network's training range in the caller's units (``clip_range``)."""
    lo, hi = ((v - denoiser.data_shift) / denoiser.data_scale for v in model_range)
    denoiser.clip_range = (float(lo), float(hi))
    return denoiser


def _affine(data_range: tuple[float, float] | None, model_range: tuple[float, float]) -> dict[str, float]:
    if data_range is None:
        return {"data_scale": 1.0, "data_shift": 0.0}
    scale, shift = range_affine(data_range, model_range)
    return {"data_scale": scale, "data_shift": shift}


def load_adm(
    path: str | os.PathLike,
    config: str | dict = "ffhq_256",
    *,
    data_range: tuple[float, float] | str | None = None,
    alphas_cumprod: Tensor | None = None,
    timesteps: str = "continuous",
) -> VPDenoiser:
    r"""A guided-diffusion ``UNetModel`` state dict as a VP ε-denoiser.

    Args:
        path: the ``.pt`` state dict (e.g. DPS's ``ffhq_10m.pt``).
        config: a name of :data:`~invdiff.priors.adm.ADM_CONFIGS` or :class:`~invdiff.priors.adm.ADMUNet`
            arguments.
        data_range: the range of the caller's images; ``None`` serves the network's own
            :math:`[-1, 1]`, ``(0, 1)`` maps :math:`[0, 1]` images onto it; ``"auto"`` picks by
            the network's channels: ``None`` for 2 channels (complex images as real and imaginary
            parts, which the problems scale to a magnitude of about 1, as DDS's fastMRI network
            was trained), ``(0, 1)`` for grey-level and RGB images.
        alphas_cumprod: the training schedule; default DDPM's linear β, ``T = 1000``.
        timesteps: ``"continuous"`` or ``"nearest"`` (see :class:`~invdiff.priors.adapters.VPDenoiser`).

    Returns:
        ``VPDenoiser(ADMUNet, prediction="eps")``; ``shape`` is ``(in_channels, image_size, image_size)``,
        ``size_multiple`` ``2 ** (len(channel_mult) - 1)``, ``source`` the path.
    """
    if isinstance(config, str):
        if config not in ADM_CONFIGS:
            raise ValueError(f"config: unknown ADM config {config!r}; available: {sorted(ADM_CONFIGS)}")
        config = ADM_CONFIGS[config]
    path = require_file(path, "adm")
    state = read_state_dict(path)
    net = ADMUNet(**config)
    load_state_dict_strict(net, state, path)
    denoiser = adm_denoiser(net, data_range=data_range, alphas_cumprod=alphas_cumprod, timesteps=timesteps)
    denoiser.source = str(path)
    return denoiser


def adm_denoiser(
    net: ADMUNet,
    *,
    data_range: tuple[float, float] | str | None = None,
    alphas_cumprod: Tensor | None = None,
    timesteps: str = "continuous",
) -> VPDenoiser:
    """An ADM network as the VP ε-denoiser :func:`load_adm` makes of a checkpoint (arguments as
    there), put in eval mode with ``requires_grad`` off."""
    net.eval().requires_grad_(False)
    cfg = net.config
    if isinstance(data_range, str):
        if data_range != "auto":
            raise ValueError(f"data_range: expected (low, high), None or 'auto', got {data_range!r}")
        data_range = None if cfg["in_channels"] == 2 else (0.0, 1.0)
    denoiser = VPDenoiser(
        net,
        vp_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod,
        "eps",
        timesteps=timesteps,
        shape=(cfg["in_channels"], cfg["image_size"], cfg["image_size"]),
        **_affine(data_range, (-1.0, 1.0)),
    )
    return _with_range(denoiser, (-1.0, 1.0))


def _edm_archs() -> dict[str, type[nn.Module]]:
    from deepinv.models import ADMUNet as EDMADMUNet
    from deepinv.models import NCSNpp

    return {"adm": EDMADMUNet, "ncsnpp": NCSNpp}


def load_edm(
    path: str | os.PathLike,
    arch: str = "adm",
    *,
    sigma_data: float = 0.5,
    data_range: tuple[float, float] | None = None,
    model_range: tuple[float, float] = (-1.0, 1.0),
    **config,
) -> ScaledDenoiser:
    r"""An EDM network state dict in deepinv's key layout, as a denoiser.

    deepinv's ``ADMUNet`` and ``NCSNpp`` (built here with ``pretrained=None``) take ``(x, sigma)``
    and apply EDM preconditioning themselves, with ``pixel_std`` as :math:`\sigma_d`. Their
    own ``[0, 1] -> [-1, 1]`` switch (``_was_trained_on_minus_one_one``) is turned off; the data
    range is this adapter's affine map instead, so the result is the same network.

    Args:
        path: the state dict (``.pt``/``.pth`` or ``.safetensors``).
        arch: ``"adm"`` (deepinv ``ADMUNet``) or ``"ncsnpp"`` (deepinv ``NCSNpp``: NCSN++ or DDPM++
            with ``model_type``).
        sigma_data: :math:`\sigma_d` in the network's range (0.5 for NVlabs' EDM models).
        data_range: the range of the caller's images; ``None`` serves ``model_range`` itself.
        model_range: the range the network was trained on; EDM's models use :math:`[-1, 1]`.
        **config: the deepinv class's architecture arguments (``img_resolution``, ``in_channels``,
            ``model_channels``, ``channel_mult``, ``num_blocks``, ``attn_resolutions``, ...).
            Class-conditional networks (``label_dim > 0``) are not supported.

    Returns:
        ``ScaledDenoiser`` around the deepinv network; ``shape`` from ``in_channels`` and
        ``img_resolution`` when given, ``size_multiple`` ``2 ** (len(channel_mult) - 1)`` (counted
        from the network's downsampling blocks), ``source`` the path.
    """
    archs = _edm_archs()
    if arch not in archs:
        raise ValueError(f"arch: unknown EDM architecture {arch!r}; available: {sorted(archs)}")
    if config.get("label_dim", 0):
        raise ValueError(
            f"label_dim: class-conditional EDM networks are not supported, got {config['label_dim']}"
        )
    if "pretrained" in config:
        raise ValueError("pretrained: not an option here; the weights come from path")
    path = require_file(path, "edm")
    state = read_state_dict(path)
    net = archs[arch](pretrained=None, **config)
    net._was_trained_on_minus_one_one = False
    net.pixel_std = float(sigma_data)
    load_state_dict_strict(net, state, path)
    net.eval().requires_grad_(False)
    res = config.get("img_resolution")
    shape = (config.get("in_channels", 3), res, res) if res is not None else None
    denoiser = _with_range(ScaledDenoiser(net, shape=shape, **_affine(data_range, model_range)), model_range)
    denoiser.source = str(path)
    return denoiser


class _DiffusersUNet(nn.Module):
    """``UNet2DModel`` as ``model(x, t) -> tensor``.

    ``size_multiple``: ``2 ** (len(block_out_channels) - 1)``; every down block but the last
    halves the resolution.
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.size_multiple = 2 ** (len(unet.config.block_out_channels) - 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t).sample


def _diffusers_alphas_cumprod(cfg: dict, source: Path | str) -> Tensor:
    r""":math:`\bar\alpha_t` of a diffusers scheduler config, float64 (diffusers itself uses float32)."""
    T = int(cfg.get("num_train_timesteps", 1000))
    beta_start, beta_end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    schedule = cfg.get("beta_schedule", "linear")
    if cfg.get("trained_betas") is not None:
        betas = torch.as_tensor(cfg["trained_betas"], dtype=torch.float64)
    elif schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64).square()
    elif schedule == "squaredcos_cap_v2":
        s = torch.arange(T + 1, dtype=torch.float64) / T
        abar = torch.cos((s + 0.008) / 1.008 * torch.pi / 2).square()
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    else:
        raise ValueError(
            f"{source}: beta_schedule {schedule!r} not supported; "
            "expected linear, scaled_linear or squaredcos_cap_v2"
        )
    return torch.cumprod(1 - betas, 0)


def _read_json_object(path: Path, expected: str) -> dict:
    """A JSON object from ``path``; ``ValueError`` naming the file if it is not one."""
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: is not JSON ({exc}); expected {expected}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected {expected} (a JSON object), found a {type(obj).__name__}")
    return obj


_DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


def load_diffusers(
    folder: str | os.PathLike,
    *,
    data_range: tuple[float, float] | None = None,
    timesteps: str = "continuous",
) -> VPDenoiser:
    r"""A diffusers ``UNet2DModel`` folder as a VP denoiser.

    ``folder`` holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or is a
    pipeline folder with them under ``unet/``). The schedule and the parameterisation come from a
    ``scheduler_config.json`` in ``folder``, ``folder/scheduler/`` or ``folder/../scheduler/``
    (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps``,
    ``trained_betas``, ``prediction_type``); without one, DDPM's defaults (linear β from 1e-4 to
    0.02, ``T = 1000``, ε-prediction).

    Args:
        folder: the model (or pipeline) folder.
        data_range: the range of the caller's images; ``None`` serves the network's own
            :math:`[-1, 1]`.
        timesteps: ``"continuous"`` or ``"nearest"``.

    Returns:
        ``VPDenoiser`` around the ``UNet2DModel``; ``size_multiple`` ``2 ** (len(block_out_channels) - 1)``,
        ``source`` the folder.
    """
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:
        raise ImportError(
            "load_diffusers needs the optional dependency diffusers: pip install 'invdiff[diffusers]'"
        ) from exc
    folder = Path(folder)
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    require_file(unet_dir / "config.json", "diffusers")
    # 1. The network, weights checked strictly.
    unet, info = UNet2DModel.from_pretrained(
        unet_dir, local_files_only=True, output_loading_info=True, low_cpu_mem_usage=False
    )
    missing, unexpected = list(info.get("missing_keys", [])), list(info.get("unexpected_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{unet_dir}: weights do not match config.json: {len(missing)} missing keys {missing[:_SHOW]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:_SHOW]}, {len(mismatched)} of the wrong shape "
            f"{mismatched[:_SHOW]}"
        )
    unet.eval().requires_grad_(False)
    # 2. The schedule and the parameterisation.
    candidates = [
        folder / "scheduler_config.json",
        folder / "scheduler" / "scheduler_config.json",
        folder.parent / "scheduler" / "scheduler_config.json",
    ]
    found = next((p for p in candidates if p.is_file()), None)
    sched = _read_json_object(found, "a diffusers scheduler config") if found is not None else {}
    prediction_type = sched.get("prediction_type", "epsilon")
    if prediction_type not in _DIFFUSERS_PREDICTIONS:
        raise ValueError(
            f"{found}: prediction_type {prediction_type!r} not supported; "
            f"expected one of {sorted(_DIFFUSERS_PREDICTIONS)}"
        )
    size = unet.config.sample_size
    shape = None
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        shape = (unet.config.in_channels, h, w)
    denoiser = VPDenoiser(
        _DiffusersUNet(unet),
        _diffusers_alphas_cumprod(sched, found or "default scheduler"),
        _DIFFUSERS_PREDICTIONS[prediction_type],
        timesteps=timesteps,
        shape=shape,
        **_affine(data_range, (-1.0, 1.0)),
    )
    _with_range(denoiser, (-1.0, 1.0))
    denoiser.source = str(folder)
    return denoiser


LAYOUTS = {"invdiff": load_prior, "adm": load_adm, "edm": load_edm, "diffusers": load_diffusers}


def load_checkpoint(layout: str, path: str | os.PathLike, **kwargs) -> Denoiser:
    """Load ``path`` with the loader of ``layout`` (a key of :data:`LAYOUTS`), passing ``kwargs`` on."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: unknown checkpoint layout {layout!r}; available: {sorted(LAYOUTS)}")
    return LAYOUTS[layout](path, **kwargs)
