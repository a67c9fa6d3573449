"""Helpers shared by the prior tests."""

import math

import torch

TINY_UNET = {
    "channels": 32,
    "channel_mult": (1, 2),
    "num_blocks": 1,
    "attn_resolutions": (8,),
    "img_resolution": 16,
}
"""A project UNet small enough for tests (with ``in_channels``)."""


def randomize(module, generator):
    """Random weights everywhere (these networks zero-initialise their last layers)."""
    with torch.no_grad():
        for p in module.parameters():
            scale = 1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.1
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module
