"""Report of a batch run folder: ``python scripts/report.py <run folder>``.

Writes ``report.md``, ``psnr_vs_nfe.png``, ``seconds.png`` and ``examples.png`` into the folder
(the ``out_dir`` of ``benchmark=mri`` or ``benchmark=ct``) and prints the markdown table;
``--beside <other run folder>`` adds both runs' PSNR and SSIM side by side;
``--compare <run folder> ... --out <folder>`` writes one InverseBench-style table over several runs.
"""

import argparse
from pathlib import Path

from invdiff.batch.report import compare_runs, side_by_side, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="the out_dir of a batch benchmark")
    parser.add_argument("--beside", type=Path, help="another run folder: print both runs' PSNR and SSIM side by side")
    parser.add_argument("--labels", nargs=2, metavar=("RUN", "BESIDE"), help="the two runs' names in that table")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="RUN",
                        help="batch run folders, each as FOLDER or LABEL=FOLDER (folders with one label merge: one benchmark "
                             "whose methods ran apart): one table over all of them, a row per method; see --out")
    parser.add_argument("--out", type=Path, help="with --compare: the folder for compare.md and quality_vs_nfe.png")
    args = parser.parse_args()
    if args.compare:
        if args.out is None:
            parser.error("--compare needs --out <folder>")
        print(compare_runs(args.compare, args.out))
        return
    if args.run_dir is None:
        parser.error("expected a run folder (or --compare RUN ... --out FOLDER)")
    print(write_report(args.run_dir))
    if args.beside is not None:
        print("\n" + side_by_side(args.run_dir, args.beside, tuple(args.labels) if args.labels else None))


if __name__ == "__main__":
    main()
