"""Report of a batch run folder: ``python scripts/report.py <run folder>``.

Writes ``report.md``, ``psnr_vs_nfe.png``, ``seconds.png`` and ``examples.png`` into the folder
(the ``out_dir`` of ``benchmark=mri`` or ``benchmark=ct``) and prints the markdown table;
``--beside <other run folder>`` adds both runs' PSNR and SSIM side by side.
"""

import argparse
from pathlib import Path

from invdiff.batch.report import side_by_side, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the out_dir of a batch benchmark")
    parser.add_argument("--beside", type=Path, help="another run folder: print both runs' PSNR and SSIM side by side")
    parser.add_argument("--labels", nargs=2, metavar=("RUN", "BESIDE"), help="the two runs' names in that table")
    args = parser.parse_args()
    print(write_report(args.run_dir))
    if args.beside is not None:
        print("\n" + side_by_side(args.run_dir, args.beside, tuple(args.labels) if args.labels else None))


if __name__ == "__main__":
    main()
