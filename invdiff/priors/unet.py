r"""invdiff's own compact UNet, its EDM denoiser, and the invdiff checkpoint format.

:class:`UNet` is a small ADM-style network ``F(x, c_noise)`` sized for CPU work (5.3 M parameters
and about 60 ms per 64×64 image on two CPU threads at the defaults): residual blocks with GroupNorm
and SiLU, a sinusoidal embedding of ``c_noise`` with scale-shift (FiLM) conditioning,
self-attention at chosen resolutions.
:func:`edm_unet` wraps it in EDM preconditioning (:class:`~invdiff.priors.adapters.EDMDenoiser`).
Complex images are 2-channel real images here (``in_channels=2``).

Checkpoint format (:func:`save_prior`, :func:`load_prior`): one file holding the denoiser's state
dict and a JSON description of the adapter and the network, so that loading rebuilds it with no
other input. ``*.safetensors`` files keep the JSON in the safetensors metadata; any other suffix
is a ``torch.save`` of ``{"format", "config", "state_dict"}`` with only strings and tensors, read
back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invdiff.fileio import atomic_path
from invdiff.priors.adapters import ADAPTERS, EDMDenoiser
from invdiff.priors.adm import ADMUNet
from invdiff.priors.base import Denoiser

FORMAT = "invdiff-prior"
FORMAT_VERSION = 1


def _group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= num_groups`` that divides ``channels``."""
    groups = max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class NoiseEmbedding(nn.Module):
    r"""Sinusoidal features ``[cos(f_k c), sin(f_k c)]`` of ``c = c_noise``, ``f_k`` geometric in [1, 200].

    With EDM's :math:`c_{noise} = \ln(\sigma)/4` the range ``sigma in [0.002, 80]`` spans
    ``c_noise in [-1.55, 1.1]``; the lowest frequency resolves that whole range, the highest
    (``max_freq = 200``) noise-level changes of a few percent.

    Shapes:
        ``forward(c_noise: (B,)) -> (B, num_channels)``.
    """

    def __init__(self, num_channels: int, max_freq: float = 200.0):
        super().__init__()
        if num_channels % 2:
            raise ValueError(f"num_channels: expected an even number, got {num_channels}")
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), num_channels // 2, dtype=torch.float64))
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        args = c_noise[:, None] * self.freqs.to(c_noise.dtype)[None]
        return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    r"""``(skip(x) + conv(drop(silu(FiLM(norm(conv(silu(norm(x))))))))) / sqrt(2)``, FiLM by the embedding.

    Shapes:
        ``forward(x: (B, in_ch, H, W), emb: (B, emb_ch)) -> (B, out_ch, H, W)``.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1 = _group_norm(in_ch, num_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_ch, 2 * out_ch)
        self.norm2 = _group_norm(out_ch, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[..., None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (self.skip(x) + h) * (0.5**0.5)


class Attention(nn.Module):
    """Multi-head self-attention over all positions, residual.

    Shapes:
        ``forward(x: (B, C, H, W)) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, channels_per_head: int, num_groups: int):
        super().__init__()
        self.num_heads = max(1, channels // channels_per_head)
        if channels % self.num_heads:
            raise ValueError(
                f"channels_per_head: {channels} channels do not split into {self.num_heads} heads"
            )
        self.norm = _group_norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    r"""A compact ADM-style UNet ``F(x, c_noise)``, the raw network under EDM preconditioning.

    Levels ``l = 0 .. L-1`` work at ``H / 2**l`` with ``channels * channel_mult[l]`` channels and
    ``num_blocks`` residual blocks each in the encoder and in the decoder; decoder block ``i``
    concatenates the output of its mirror encoder block (one skip per block). Attention follows
    each block of a level whose nominal resolution ``img_resolution / 2**l`` is in
    ``attn_resolutions``; the middle is residual-attention-residual. Downsampling is a strided
    3×3 convolution, upsampling nearest ×2 then a 3×3 convolution. The last convolution of every
    residual block, of every attention block and of the output is zero-initialised, so a fresh
    network has ``F = 0``.

    Args:
        in_channels: image channels (2 for complex images as real and imaginary parts).
        out_channels: output channels; default ``in_channels``.
        channels: base width.
        channel_mult: per-level width multipliers.
        num_blocks: residual blocks per level, in the encoder and in the decoder.
        attn_resolutions: nominal resolutions with self-attention.
        dropout: dropout probability in the residual blocks.
        img_resolution: the nominal input resolution (places attention only; any ``H, W``
            divisible by ``2 ** (len(channel_mult) - 1)`` is accepted).
        emb_channels: width of the noise embedding; default ``2 * channels``.
        channels_per_head: attention head width.
        num_groups: GroupNorm groups (reduced where it does not divide the width).

    Shapes:
        ``forward(x: (B, in_channels, H, W), c_noise: (B,)) -> (B, out_channels, H, W)``.
    """

    arch = "unet"

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        img_resolution: int = 64,
        emb_channels: int | None = None,
        channels_per_head: int = 64,
        num_groups: int = 32,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        emb_channels = 2 * channels if emb_channels is None else emb_channels
        if not channel_mult or num_blocks < 1:
            raise ValueError(
                f"channel_mult, num_blocks: expected a non-empty tuple and >= 1, "
                f"got {channel_mult}, {num_blocks}"
            )
        self.config = {
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "channels": int(channels),
            "channel_mult": [int(m) for m in channel_mult],
            "num_blocks": int(num_blocks),
            "attn_resolutions": [int(r) for r in attn_resolutions],
            "dropout": float(dropout),
            "img_resolution": int(img_resolution),
            "emb_channels": int(emb_channels),
            "channels_per_head": int(channels_per_head),
            "num_groups": int(num_groups),
        }
        self.in_channels = in_channels
        self.num_levels = len(channel_mult)
        self.embed = NoiseEmbedding(channels)
        self.map = nn.Sequential(
            nn.Linear(channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels), nn.SiLU()
        )

        def block(cin, cout):
            return ResBlock(cin, cout, emb_channels, dropout, num_groups)

        def attn(ch, level):
            return (
                Attention(ch, channels_per_head, num_groups)
                if (img_resolution >> level) in attn_resolutions
                else None
            )

        # Encoder: stem, then per level residual(+attention) blocks and a strided-conv downsampling.
        ch = channels * channel_mult[0]
        self.stem = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.enc, self.enc_attn, self.down = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skips = []
        for level, mult in enumerate(channel_mult):
            for _ in range(num_blocks):
                self.enc.append(block(ch, channels * mult))
                ch = channels * mult
                self.enc_attn.append(attn(ch, level) or nn.Identity())
                skips.append(ch)
            if level < self.num_levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid1, self.mid_attn, self.mid2 = (
            block(ch, ch),
            Attention(ch, channels_per_head, num_groups),
            block(ch, ch),
        )
        # Decoder: per level residual(+attention) blocks on [h, skip], then nearest ×2 + conv.
        self.dec, self.dec_attn, self.up = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks):
                self.dec.append(block(ch + skips.pop(), channels * mult))
                ch = channels * mult
                self.dec_attn.append(attn(ch, level) or nn.Identity())
            if level > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_norm = _group_norm(ch, num_groups)
        self.out_conv = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw every weight afresh from ``generator`` (the global RNG is not used).

        Convolutions and linear layers get PyTorch's default initialisation (Kaiming-uniform
        weights with ``a = sqrt(5)``, biases uniform in ``±1/sqrt(fan_in)``); the last
        convolution of every residual block, of every attention block and of the output is
        then zeroed again, so the network still has ``F = 0``.

        Args:
            generator: a CPU generator.
        """
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                    bound = 1 / math.sqrt(m.weight[0].numel())
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            zeroed = [m.conv2 for m in self.modules() if isinstance(m, ResBlock)]
            zeroed += [m.proj for m in self.modules() if isinstance(m, Attention)]
            for layer in [*zeroed, self.out_conv]:
                layer.weight.zero_()
                layer.bias.zero_()

    @property
    def size_multiple(self) -> int:
        """``2 ** (len(channel_mult) - 1)``: input ``H`` and ``W`` must be multiples of it."""
        return 2 ** (self.num_levels - 1)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        factor = self.size_multiple
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"x: expected (B, {self.in_channels}, H, W) with H, W divisible by {factor}, "
                f"got {tuple(x.shape)}"
            )
        c_noise = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device)
        emb = self.map(self.embed(c_noise.expand(x.shape[0]) if c_noise.ndim == 0 else c_noise))
        nb = self.config["num_blocks"]
        # 1. Encoder, keeping every block's output for the skips.
        h, hs = self.stem(x), []
        for level in range(self.num_levels):
            for i in range(level * nb, (level + 1) * nb):
                h = self.enc_attn[i](self.enc[i](h, emb))
                hs.append(h)
            if level < self.num_levels - 1:
                h = self.down[level](h)
        # 2. Middle.
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        # 3. Decoder, each block on [h, mirror skip].
        for j, level in enumerate(reversed(range(self.num_levels))):
            for i in range(j * nb, (j + 1) * nb):
                h = self.dec_attn[i](self.dec[i](torch.cat([h, hs.pop()], dim=1), emb))
            if level > 0:
                h = self.up[j](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))


def edm_unet(
    sigma_data: float = 0.5,
    *,
    data_scale: float = 1.0,
    data_shift: float = 0.0,
    seed: int = 0,
    patches: bool = False,
    **config,
) -> EDMDenoiser:
    """A :class:`UNet` under EDM preconditioning, its initial weights drawn from ``seed``.

    Args:
        sigma_data: the data's standard deviation (in the network's range).
        data_scale, data_shift: the affine map from the caller's data to the network's range.
        seed: seeds the generator of the initial weights (:meth:`UNet.reset_parameters`); the
            same seed gives the same network, and the global RNG's state is left as it was.
        patches: the network is trained on ``img_resolution``-sized windows of larger images
            (:attr:`~invdiff.priors.base.Denoiser.patches`).
        **config: :class:`UNet` arguments (``in_channels`` required).

    Returns:
        The denoiser, ``(B, C, H, W), sigma -> (B, C, H, W)``, with ``shape`` set from
        ``in_channels`` and ``img_resolution``.
    """
    # The layers' own initialisation draws from the global RNG; its state is restored afterwards.
    with torch.random.fork_rng(devices=[]):
        net = UNet(**config)
    net.reset_parameters(torch.Generator().manual_seed(int(seed)))
    res = net.config["img_resolution"]
    return EDMDenoiser(
        net,
        sigma_data,
        data_scale=data_scale,
        data_shift=data_shift,
        shape=(net.config["in_channels"], res, res),
        patches=patches,
    )


NETWORKS = {"unet": UNet, "adm": ADMUNet}


def require_safetensors():
    """The ``safetensors.torch`` module, or an ``ImportError`` that says how to install it."""
    try:
        import safetensors.torch
    except ImportError as exc:
        raise ImportError(
            "*.safetensors files need the optional dependency safetensors: pip install 'invdiff[diffusers]' "
            "(or use a .pt path)"
        ) from exc
    return safetensors.torch


def save_prior(path: str | os.PathLike, denoiser: Denoiser) -> None:
    """Write ``denoiser`` (an adapter around a network of :data:`NETWORKS`) to ``path``, atomically.

    The file is written to a temporary name in the same folder and renamed into place
    (:func:`invdiff.fileio.atomic_path`); the folder is created if absent.

    Args:
        path: target file; ``*.safetensors`` for safetensors, anything else for ``torch.save``.
        denoiser: a :class:`~invdiff.priors.adapters.VPDenoiser`, ``EDMDenoiser`` or
            ``ScaledDenoiser`` whose ``model`` is a :class:`UNet` or an :class:`ADMUNet`.
    """
    path = Path(path)
    kind = getattr(denoiser, "kind", None)
    net = getattr(denoiser, "model", None)
    arch = getattr(net, "arch", None)
    if kind not in ADAPTERS or arch not in NETWORKS or not isinstance(net, NETWORKS[arch]):
        raise ValueError(
            f"denoiser: expected an adapter of {sorted(ADAPTERS)} around a network of {sorted(NETWORKS)}, "
            f"got {type(denoiser).__name__} around {type(net).__name__}"
        )
    config = json.dumps(
        {"adapter": {"kind": kind, **denoiser.config}, "network": {"arch": arch, **net.config}}
    )
    state = {k: v.detach().cpu().contiguous().clone() for k, v in denoiser.state_dict().items()}
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "config": config}
    with atomic_path(path, mkdir=True) as tmp:
        if path.suffix == ".safetensors":
            require_safetensors().save_file(state, str(tmp), metadata=meta)
        else:
            torch.save({**meta, "state_dict": state}, tmp)


def load_prior(path: str | os.PathLike) -> Denoiser:
    """Rebuild a denoiser written by :func:`save_prior`, on the CPU, in eval mode, without gradients.

    Args:
        path: the file.

    Returns:
        The adapter around its network, weights loaded with strict key matching; ``source`` is
        ``path``, ``size_multiple`` the network's.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming ``path``: an empty, truncated or unreadable file, not an invdiff prior,
            a newer format version, a metadata ``config`` that is not the JSON :func:`save_prior`
            writes or does not build a network, or weights that do not match it.
    """
    # Imported here: checkpoints imports this module for its ``invdiff`` layout.
    from invdiff.priors.checkpoints import (
        is_state_dict, load_state_dict_strict, read_checkpoint, read_safetensors, require_file,
    )

    path = require_file(path, "invdiff")
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
    else:
        meta = read_checkpoint(path)
        if not isinstance(meta, dict) or not is_state_dict(meta.get("state_dict")):
            raise ValueError(
                f"{path}: not an invdiff prior (expected a dict with 'format', 'config', 'state_dict')"
            )
        state = meta["state_dict"]
    if meta.get("format") != FORMAT or not isinstance(meta.get("config"), str):
        raise ValueError(f"{path}: not an invdiff prior (format {meta.get('format')!r}, expected {FORMAT!r})")
    version = str(meta.get("version", 0))
    if not version.isdigit():
        raise ValueError(f"{path}: metadata 'version' is {version!r}, expected a whole number")
    if int(version) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: invdiff prior format version {version}, newer than this invdiff reads "
            f"({FORMAT_VERSION}); update invdiff"
        )
    kind, adapter, arch, network = _prior_config(meta["config"], path)
    try:
        denoiser = ADAPTERS[kind](NETWORKS[arch](**network), **adapter)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{path}: metadata 'config' does not build a {kind!r} adapter around a {arch!r} network: {exc}"
        ) from exc
    load_state_dict_strict(denoiser, state, path)
    denoiser.source = str(path)
    return denoiser.eval().requires_grad_(False)


def _prior_config(text: str, path: Path) -> tuple[str, dict, str, dict]:
    """``kind, adapter options, arch, network options`` from the JSON ``config`` of a prior file."""
    expected = '{"adapter": {"kind": ..., ...}, "network": {"arch": ..., ...}} as save_prior writes it'
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: metadata 'config' is not JSON ({exc}); expected {expected}") from exc
    adapter = config.get("adapter") if isinstance(config, dict) else None
    network = config.get("network") if isinstance(config, dict) else None
    if not (isinstance(adapter, dict) and "kind" in adapter and isinstance(network, dict)
            and "arch" in network):
        raise ValueError(
            f"{path}: metadata 'config' is not an invdiff prior description; expected {expected}, "
            f"got {text[:200]!r}"
        )
    adapter, network = dict(adapter), dict(network)
    kind, arch = adapter.pop("kind"), network.pop("arch")
    if kind not in ADAPTERS or arch not in NETWORKS:
        raise ValueError(
            f"{path}: unknown adapter {kind!r} or network {arch!r}; expected one of {sorted(ADAPTERS)} "
            f"around one of {sorted(NETWORKS)}"
        )
    return kind, adapter, arch, network
