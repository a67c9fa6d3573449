"""Write the model card of a shipped prior from its training folder and its held-out data:
``python scripts/model_card.py mri_brain_64 --train-dir outputs/train/mri_brain_64 --data data/mri_brain_64``.

The card (``invdiff/priors/weights/<name>.md``) records the data, the training command, steps
and time (from ``loss.csv``), the architecture, and the denoising PSNR per noise level on the
test split against tuned TV and the Gaussian (Wiener) baseline; a sample grid
(``<name>_samples.png``, DPM-Solver++(2M), 20 steps) goes beside it.
"""

import argparse
import csv
import json
from pathlib import Path

import torch

from invdiff.benchmarks.common import markdown_table
from invdiff.benchmarks.denoising import COLUMNS, evaluate_prior
from invdiff.figures import image_grid
from invdiff.priors.packaged import WEIGHTS, load_packaged
from invdiff.samplers import sample_dpmpp_2m
from invdiff.schedules import sigmas_karras


def training_log(train_dir: Path) -> tuple[int, float]:
    """Last step and total training seconds over every (resumed) run in ``loss.csv``."""
    rows = list(csv.DictReader((train_dir / "loss.csv").open()))
    rows = [r for r in rows if r["step"] != "step"]
    total, last = 0.0, 0.0
    for row in rows:
        seconds = float(row["seconds"])
        if seconds < last:  # a resumed run restarts its clock
            total += last
        last = seconds
    return int(rows[-1]["step"]), total + last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--train-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--description", default="")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args()
    prior = load_packaged(args.name)
    step, seconds = training_log(args.train_dir)
    info = json.loads((args.data / "info.json").read_text())
    rows = evaluate_prior(args.name, str(args.data), [0.02, 0.05, 0.1, 0.2, 0.5], args.count, 256)
    x, _ = sample_dpmpp_2m(prior, sigmas_karras(20), shape=(16, *prior.shape), generator=torch.Generator().manual_seed(0))
    images = torch.hypot(x[:, 0], x[:, 1]) if x.shape[1] == 2 else x[:, 0]
    grid = WEIGHTS / f"{args.name}_samples.png"
    image_grid(images.clamp_min(0), grid, title=f"{args.name}: DPM-Solver++(2M), 20 steps (19 NFE)")
    network = prior.model.config
    card = f"""# {args.name}

{args.description}

- **Network**: the project's UNet with EDM preconditioning (sigma_data {prior.sigma_data}),
  {sum(p.numel() for p in prior.parameters()) / 1e6:.2f} M parameters, `{json.dumps(network)}`;
  EMA weights stored in half precision (`{args.name}.safetensors`).
- **Data**: `{args.data.name}` built by `python scripts/make_data.py` — {info.get("source")};
  {info.get("representation")}; splits {json.dumps(info.get("splits"))}.
- **Training**: `python scripts/train_prior.py data={args.data} out_dir={args.train_dir}
  export=invdiff/priors/weights/{args.name}.safetensors`, EDM loss, Adam 2e-4, batch 16, EMA
  0.999, random flips; **{step} steps**, {seconds / 3600:.2f} h on the 2-core CPU (one thread,
  sharing the machine with other training).
- **Samples**: `{grid.name}`.

## Denoising PSNR (dB) on {args.count} held-out test images

`D(x + sigma n, sigma)` against tuned total-variation denoising and the Wiener filter of a
rank-256 Gaussian fitted to the same training images (`python scripts/benchmark.py
benchmark=denoising`).

{markdown_table(rows, COLUMNS)}
"""
    (WEIGHTS / f"{args.name}.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
