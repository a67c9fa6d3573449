"""Build a dataset under the data root, from packaged anatomy, CT slices or photographs.

``python scripts/make_data.py <mri_brain|mri_brain_fastmri|ct|natural> [--size 64] [--root data]``
prints the folder it built (or found complete and reused).
"""

import argparse
import os
from pathlib import Path

from invdiff.data.datasets import DATASETS, DATASETS_FASTMRI

BUILDERS = {**DATASETS, **DATASETS_FASTMRI}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(BUILDERS))
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("INVDIFF_DATA", "data")))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(BUILDERS[args.dataset](args.root, size=args.size, seed=args.seed))


if __name__ == "__main__":
    main()
