"""Tour of the operator library on a Shepp–Logan phantom: measure, check the adjoint, reconstruct.

``python scripts/demo_operators.py [--size 128] [--seed 0] [--out outputs/demo_operators]``
prints one row per operator (dot-test error in float64, classical baseline, PSNR) and writes
``operators.png`` (ground truth | baseline per task) into the output folder.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import sigpy.mri
import torch

from operators import GaussianNoise, Inpainting, PhaseRetrieval, PoissonNoise, SuperResolution, TransmissionCT
from operators.base import adjointness_error
from operators.ct import ParallelBeamCT, ellipse_image, fbp, shepp_logan_ellipses, sparse_view_angles
from operators.inpainting import random_pixel_mask
from operators.masks import fastmri_mask
from operators.mri import MultiCoilMRI


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of magnitudes with the reference's peak as the data range."""
    x, ref = x.abs(), ref.abs()
    mse = float((x - ref).square().mean())
    return 10 * math.log10(float(ref.max()) ** 2 / mse)


def run(size: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    phantom = ellipse_image(shepp_logan_ellipses((size, size)), (size, size), supersample=2)
    x = phantom.to(torch.float32)[None, None]
    rows = []

    def record(task, op, x_true, baseline, x_hat):
        x64 = x_true.to(torch.complex128 if x_true.is_complex() else torch.float64)
        rows.append({
            "task": task, "adjoint_err": adjointness_error(op.to(dtype=torch.float64), x64, generator=g),
            "baseline": baseline, "psnr": psnr(x_hat, x_true), "truth": x_true, "recon": x_hat,
        })

    # 1. Sparse-view CT, 60 views, FBP.
    ct = ParallelBeamCT((size, size), sparse_view_angles(60))
    y = GaussianNoise(0.5)(ct.A(x), generator=g)
    record("ct", ct, x, "FBP (ramp)", fbp(y, ct))

    # 2. Multi-coil MRI, 8 birdcage coils, 4x equispaced lines; CG-SENSE.
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((8, size, size))).to(torch.complex64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    z = x * torch.polar(torch.ones_like(xx), 0.8 * (xx + 0.5 * yy))
    mri = MultiCoilMRI(maps, fastmri_mask((size, size), 4, kind="equispaced", seed=seed))
    y = GaussianNoise(0.002)(mri.A(z), generator=g)
    record("mri", mri, z, "CG-SENSE (20 it.)", mri.pinv(y, max_iter=20))

    # 3. Inpainting, 30 % of pixels observed; zero-filled.
    inpaint = Inpainting(random_pixel_mask((size, size), 0.3, generator=g))
    record("inpaint", inpaint, x, "zero-filled (pinv)", inpaint.pinv(inpaint.A(x)))

    # 4. Super-resolution x4, bicubic anti-aliasing; pseudo-inverse.
    sr = SuperResolution(4, "bicubic")
    record("sr", sr, x, "pseudo-inverse", sr.pinv(GaussianNoise(0.01)(sr.A(x), generator=g)))

    # 5. Pre-log transmission CT, 1e4 photons, post-log FBP.
    transmission = TransmissionCT(ParallelBeamCT((size, size), 180), I0=1e4)
    mu = 0.02 * x  # attenuation per pixel length
    counts = PoissonNoise(1.0, normalize=False)(transmission.A(mu), generator=g)
    record("ct_prelog", transmission.projector, mu, "post-log FBP",
           fbp(transmission.postlog(counts), transmission.projector))

    # 6. Phase retrieval: magnitudes only; the adjoint test is on its linear part (pad + FFT).
    phase = PhaseRetrieval(2.0)
    magnitudes = phase.A(x)
    rows.append({"task": "phase", "adjoint_err": None,
                 "baseline": f"measures {tuple(magnitudes.shape[-2:])} magnitudes", "psnr": None,
                 "truth": x, "recon": None})
    return rows


def save_figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["recon"] is not None]
    fig, axes = plt.subplots(2, len(shown), figsize=(2.4 * len(shown), 5))
    for col, row in enumerate(shown):
        for r, (key, label) in enumerate((("truth", "truth"), ("recon", row["baseline"]))):
            ax = axes[r, col]
            ax.imshow(row[key][0, 0].abs().numpy(), cmap="gray")
            ax.set_title(f"{row['task']}: {label}" if r == 0 else f"{label}\n{row['psnr']:.1f} dB", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo_operators"))
    args = parser.parse_args()
    rows = run(args.size, args.seed)
    print(f"{'task':10s} {'dot-test error':>15s}  {'baseline':28s} {'PSNR (dB)':>9s}")
    for r in rows:
        err = "" if r["adjoint_err"] is None else f"{r['adjoint_err']:.1e}"
        value = "" if r["psnr"] is None else f"{r['psnr']:.2f}"
        print(f"{r['task']:10s} {err:>15s}  {r['baseline']:28s} {value:>9s}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_figure(rows, args.out / "operators.png")
    print(f"figure: {args.out / 'operators.png'}")


if __name__ == "__main__":
    main()
