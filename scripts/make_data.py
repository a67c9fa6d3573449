"""Build a dataset under the data root, from packaged anatomy, CT slices or photographs.

``python scripts/make_data.py <mri_brain|mri_brain_fastmri|ct|natural> [--size 64] [--root data]``
prints the folder it built (or found complete and reused). ``--native`` (``mri_brain``, ``ct``)
keeps the sources' own pixel grid instead of ``--size``, for patch training
(``data/mri_brain_native``, ``data/ct_native``). ``mri_brain_fastmri`` also takes
``--width W`` (k-space phase-encode width), ``--coils``, ``--slab`` (slices per volume),
``--acceleration 4|8`` (prospective test files: masked k-space, no target) and
``--single-coil``; e.g. fastMRI's geometry, 640 x 372 k-space with a 320 x 320 target:
``python scripts/make_data.py mri_brain_fastmri --size 320 --width 372 --coils 6 --slab 2``.
"""

import argparse
import os
from pathlib import Path

from invdiff.data.datasets import DATASETS, DATASETS_FASTMRI, NATIVE

BUILDERS = {**DATASETS, **DATASETS_FASTMRI}

FASTMRI_OPTIONS = ("width", "coils", "slab", "acceleration", "single_coil")
"""Options that only the fastMRI-layout builders take."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(BUILDERS))
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("INVDIFF_DATA", "data")))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--native", action="store_true",
                        help=f"the sources' own pixel grid instead of --size ({', '.join(NATIVE)} only)")
    fastmri = parser.add_argument_group("fastMRI layout (mri_brain_fastmri only)")
    fastmri.add_argument("--width", type=int, help="k-space phase-encode width W >= size (default: size)")
    fastmri.add_argument("--coils", type=int, help="number of coils (default 8)")
    fastmri.add_argument("--slab", type=int, help="slices per volume (default 8)")
    fastmri.add_argument("--acceleration", type=float, choices=(4.0, 8.0),
                         help="write prospective test files: fastMRI-masked k-space and no target")
    fastmri.add_argument("--single-coil", action="store_true", help="single-coil files with an ESC target")
    args = parser.parse_args()
    extra = {name: getattr(args, name) for name in FASTMRI_OPTIONS if getattr(args, name) not in (None, False)}
    if extra and args.dataset not in DATASETS_FASTMRI:
        parser.error(f"--{'/--'.join(n.replace('_', '-') for n in extra)}: only for {sorted(DATASETS_FASTMRI)}")
    if args.native and args.dataset not in NATIVE:
        parser.error(f"--native: only for {sorted(NATIVE)}")
    size = None if args.native else args.size
    print(BUILDERS[args.dataset](args.root, size=size, seed=args.seed, **extra))


if __name__ == "__main__":
    main()
