"""invdiff: posterior sampling for imaging inverse problems with diffusion-model priors."""

__version__ = "0.1.0"
