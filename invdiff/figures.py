"""Figures: ground truth | baseline | reconstruction | error map."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


def comparison_figure(
    truth: Tensor,
    baseline: Tensor,
    recon: Tensor,
    *,
    titles: tuple[str, str, str],
    scores: tuple[dict, dict],
    path: Path,
) -> None:
    """Save a four-panel PNG: the three ``(H, W)`` images on one grey scale and ``|recon - truth|``.

    Args:
        truth, baseline, recon: real display images.
        titles: titles of the first three panels.
        scores: metrics of the baseline and of the reconstruction (``psnr``, ``ssim``).
        path: the PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(truth.max())
    error = (recon - truth).abs()
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    panels = [(truth, titles[0]), (baseline, f"{titles[1]}\n"), (recon, f"{titles[2]}\n")]
    panels[1] = (baseline, panels[1][1] + f"{scores[0]['psnr']:.2f} dB, SSIM {scores[0]['ssim']:.3f}")
    panels[2] = (recon, panels[2][1] + f"{scores[1]['psnr']:.2f} dB, SSIM {scores[1]['ssim']:.3f}")
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
    im = axes[3].imshow(error.numpy(), cmap="magma", vmin=0, vmax=0.25 * vmax)
    axes[3].set_title("|reconstruction - truth|", fontsize=9)
    fig.colorbar(im, ax=axes[3], fraction=0.046)
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
