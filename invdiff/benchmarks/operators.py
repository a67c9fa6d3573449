"""Operator speed and memory against deepinv, sigpy and the FFT-only floor.

Each method runs twice, each time in a fresh process: once to time ``A`` and ``AT`` (medians
after a warm-up, with fixed allocator thresholds, see :data:`~invdiff.benchmarks.common.MALLOC_ENV`),
once for peak memory: the resident-memory high-water mark above the level before the operator
was built, through construction and one ``A`` and one ``AT``, i.e. the operator's buffers plus
its transient work arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.benchmarks.common import MALLOC_ENV, PeakMemory, markdown_table, median_ms, run_isolated


def _measure(build: Callable[[], tuple[Callable, Callable, object]], threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    with PeakMemory() as memory:
        A, AT, x = build()
        y = A(x)
        AT(y)
    if repeats == 0:
        return {"peak_mib": memory.peak_mib}
    return {
        "A_ms": median_ms(lambda: A(x), repeats=repeats),
        "AT_ms": median_ms(lambda: AT(y), repeats=repeats),
        "peak_mib": memory.peak_mib,
    }


# --- CT: parallel beam ------------------------------------------------------------------------


def _ct_input(size: int) -> torch.Tensor:
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))


def ct_invdiff(size: int, angles: int, threads: int, repeats: int) -> dict:
    from operators.ct import ParallelBeamCT

    x = _ct_input(size)

    def build():
        op = ParallelBeamCT((size, size), angles)
        return op.A, op.AT, x

    return _measure(build, threads, repeats)


def ct_deepinv(size: int, angles: int, threads: int, repeats: int) -> dict:
    from deepinv.physics import Tomography

    x = _ct_input(size)

    def build():
        physics = Tomography(angles=angles, img_width=size, circle=False, device="cpu")
        return physics.A, physics.A_adjoint, x

    return _measure(build, threads, repeats)


# --- MRI: multi-coil SENSE --------------------------------------------------------------------


def _mri_data(coils: int, height: int, width: int, acceleration: int):
    import sigpy.mri

    from operators.masks import fastmri_mask

    g = torch.Generator().manual_seed(0)
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((coils, height, width))).to(torch.complex64)
    mask = fastmri_mask((height, width), acceleration, kind="equispaced", seed=0)
    x = torch.randn(1, 1, height, width, dtype=torch.complex64, generator=g)
    return maps, mask, x


def mri_invdiff(coils: int, height: int, width: int, acceleration: int, threads: int, repeats: int) -> dict:
    from operators.mri import MultiCoilMRI

    maps, mask, x = _mri_data(coils, height, width, acceleration)

    def build():
        op = MultiCoilMRI(maps, mask)
        return op.A, op.AT, x

    return _measure(build, threads, repeats)


def mri_deepinv(coils: int, height: int, width: int, acceleration: int, threads: int, repeats: int) -> dict:
    from deepinv.physics import MultiCoilMRI

    maps, mask, x = _mri_data(coils, height, width, acceleration)
    x2 = torch.view_as_real(x[:, 0]).permute(0, 3, 1, 2).contiguous()

    def build():
        physics = MultiCoilMRI(mask=mask, coil_maps=maps[None], img_size=(height, width), device="cpu")
        return physics.A, physics.A_adjoint, x2

    return _measure(build, threads, repeats)


def mri_sigpy(coils: int, height: int, width: int, acceleration: int, threads: int, repeats: int) -> dict:
    import sigpy.mri.linop

    maps, mask, x = _mri_data(coils, height, width, acceleration)
    maps_np, mask_np, x_np = maps.numpy(), mask.numpy(), x[0, 0].numpy()

    def build():
        linop = sigpy.mri.linop.Sense(maps_np, weights=mask_np)
        return lambda v: linop * v, lambda v: linop.H * v, x_np

    return _measure(build, threads, repeats)


def mri_fft_floor(coils: int, height: int, width: int, acceleration: int, threads: int, repeats: int) -> dict:
    maps, _, x = _mri_data(coils, height, width, acceleration)
    coil_images = maps[None] * x

    def build():
        return torch.fft.fft2, torch.fft.ifft2, coil_images

    return _measure(build, threads, repeats)


CT_METHODS = {"invdiff ParallelBeamCT": ct_invdiff, "deepinv Tomography (autograd adjoint)": ct_deepinv}
MRI_METHODS = {
    "invdiff MultiCoilMRI": mri_invdiff,
    "deepinv MultiCoilMRI": mri_deepinv,
    "sigpy Sense": mri_sigpy,
    "FFT only (fft2 + ifft2, floor)": mri_fft_floor,
}

COLUMNS = [
    ("method", "method", "s"),
    ("A_ms", "A (ms)", ".1f"),
    ("AT_ms", "AT (ms)", ".1f"),
    ("total_ms", "A+AT (ms)", ".1f"),
    ("relative", "A+AT vs reference", ".2f"),
    ("peak_mib", "peak memory (MiB)", ".0f"),
]


def _rows(methods: dict, reference: str, **params) -> list[dict]:
    rows = []
    for name, fn in methods.items():
        row = {"method": name, **run_isolated(fn, env=MALLOC_ENV, **params)}
        row["peak_mib"] = run_isolated(fn, **{**params, "repeats": 0})["peak_mib"]
        row["total_ms"] = row["A_ms"] + row["AT_ms"]
        rows.append(row)
    ref = next(r for r in rows if r["method"] == reference)["total_ms"]
    for row in rows:
        row["relative"] = row["total_ms"] / ref
    return rows


def operator_benchmark(*, ct: dict, mri: dict, threads: int, repeats: int) -> str:
    """Run the CT and MRI comparisons and return the markdown report."""
    ct_rows = _rows(CT_METHODS, "deepinv Tomography (autograd adjoint)", threads=threads, repeats=repeats, **ct)
    mri_rows = _rows(MRI_METHODS, "FFT only (fft2 + ifft2, floor)", threads=threads, repeats=repeats, **mri)
    return "\n".join(
        [
            f"### CT parallel beam, {ct['size']}x{ct['size']}, {ct['angles']} angles, float32, "
            f"{threads} threads (reference: deepinv)",
            "",
            markdown_table(ct_rows, COLUMNS),
            "",
            f"### Multi-coil MRI, {mri['coils']} coils, {mri['height']}x{mri['width']}, complex64, "
            f"{mri['acceleration']}x equispaced lines, {threads} threads (reference: FFT-only floor)",
            "",
            markdown_table(mri_rows, COLUMNS),
        ]
    )
