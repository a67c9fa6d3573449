"""Figures: ground truth | baseline | reconstruction | error map."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


def _panel(image: Tensor, vmax: float):
    """``(C, H, W)`` (C = 1 or 3) or ``(H, W)`` as what ``imshow`` takes, scaled to ``[0, 1]``."""
    image = image.detach().cpu().float()
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
    return (image / vmax).clamp(0, 1).numpy()


def comparison_figure(
    truth: Tensor | None,
    baseline: Tensor,
    recon: Tensor,
    *,
    titles: tuple[str, str, str],
    scores: tuple[dict | None, dict | None],
    path: Path,
) -> None:
    """Save a PNG: the reference, baseline and reconstruction on one scale, and ``|recon - truth|``.

    Without a reference (``truth`` is ``None``: a measurement with no ground truth) the figure
    has the baseline and the reconstruction only, on the scale of the reconstruction's 99.5th
    percentile.

    Args:
        truth, baseline, recon: real display images ``(C, H, W)`` (1 or 3 channels) or ``(H, W)``.
        titles: titles of the reference, baseline and reconstruction panels.
        scores: metrics (``psnr``, ``ssim``) of the baseline and of the reconstruction, or ``None``.
        path: the PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(truth.max()) if truth is not None else float(recon.float().flatten().quantile(0.995))
    vmax = vmax if vmax > 0 else 1.0

    def title(name: str, score: dict | None) -> str:
        return name if score is None else f"{name}\n{score['psnr']:.2f} dB, SSIM {score['ssim']:.3f}"

    panels = [(baseline, title(titles[1], scores[0])), (recon, title(titles[2], scores[1]))]
    if truth is not None:
        panels.insert(0, (truth, titles[0]))
    fig, axes = plt.subplots(1, len(panels) + (truth is not None), figsize=(3 * (len(panels) + 1), 3.4))
    for ax, (image, name) in zip(axes, panels):
        ax.imshow(_panel(image, vmax), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    if truth is not None:
        error = (recon.float() - truth.float()).abs()
        error = error.mean(0) if error.ndim == 3 else error
        im = axes[-1].imshow(error.numpy(), cmap="magma", vmin=0, vmax=0.25 * vmax)
        axes[-1].set_title("|reconstruction - reference|", fontsize=9)
        fig.colorbar(im, ax=axes[-1], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def image_grid(images: Tensor, path: Path, *, columns: int = 8, title: str | None = None) -> None:
    """Save ``(N, H, W)`` real images as a grid PNG, each on its own grey scale from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.5 * rows + (0.3 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, images):
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=max(float(image.max()), 1e-6))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
