"""Build a dataset under the data root: ``python scripts/make_data.py mri_brain [--size 64]``."""

import argparse
import os
from pathlib import Path

from invdiff.data.datasets import DATASETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("INVDIFF_DATA", "data")))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = DATASETS[args.dataset](args.root, size=args.size, seed=args.seed)
    print(folder)


if __name__ == "__main__":
    main()
