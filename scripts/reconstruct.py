"""Reconstruct one problem with one method: ``python scripts/reconstruct.py task=mri sampler=dds``.

Writes into the run directory: ``reconstruction.npy``, ``baseline.npy``, ``metrics.json``,
``figure.png`` and the resolved ``config.yaml``. ``task=fastmri task.file=<h5> task.slice=<k>``
reconstructs a slice of one's own fastMRI file (``task=ct task.image=<file>``, ``task=ct_sinogram
task.file=<file>``: one's own CT image or sinogram); without a reference in the file the
metrics are left out and the figure has no reference column.

A run directory (``hydra.run.dir``) or a sweep directory (``-m``, ``hydra.sweep.dir``) that
already holds a run's outputs is refused unless ``overwrite=true``, by :class:`RefuseOverwrite`
before Hydra writes anything there, so the earlier run's ``.hydra/`` still describes its outputs.
"""

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from invdiff.run import OUTPUTS, Method, check_run_dir, reconstruct, save_result


class RefuseOverwrite(Callback):
    """A Hydra callback (``hydra.callbacks`` in ``configs/config.yaml``) that stops a run or a
    sweep whose directory holds a run's outputs, unless ``overwrite=true``.

    It runs before Hydra creates the directory, its log and ``.hydra/`` (``on_run_start``,
    ``on_multirun_start``), so a refused run changes nothing there. Hydra turns an exception
    raised by a callback into a warning and goes on, so the refusal is a ``SystemExit`` (exit
    status 1) with the message of :func:`invdiff.run.check_run_dir`.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # ``hydra.run.dir`` may use ``${hydra:...}``
        try:
            check_run_dir(Path(config.hydra.run.dir), bool(config.get("overwrite", False)))
        except FileExistsError as exc:
            raise SystemExit(f"FileExistsError: {exc}") from exc

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        held = sorted(str(p.relative_to(sweep_dir)) for name in OUTPUTS for p in sweep_dir.rglob(name))
        if held and not config.get("overwrite", False):
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise SystemExit(
                f"FileExistsError: {sweep_dir}: already holds {shown}; choose another hydra.sweep.dir "
                f"or pass overwrite=true"
            )


def _describe(name: str, scores: dict | None) -> str:
    return name if scores is None else f"{name} PSNR {scores['psnr']:.2f} dB SSIM {scores['ssim']:.3f}"


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    check_run_dir(run_dir, cfg.overwrite)
    method = Method.from_sampler_config(OmegaConf.to_container(cfg.sampler, resolve=True))
    problem = instantiate(cfg.task)
    prior = instantiate(cfg.prior)
    with tqdm(total=method.steps, desc=f"{method.name} on {problem.name}", disable=not cfg.progress) as bar:
        result = reconstruct(problem, prior, method, seed=cfg.seed, device=cfg.device, precision=cfg.precision,
                             compile_mode=cfg.compile, callback=lambda _: bar.update(1))
    save_result(result, problem, run_dir, OmegaConf.to_yaml(cfg, resolve=True))
    m = result.metrics
    print(
        f"{problem.name}: {_describe(method.name, m['reconstruction'])} | {_describe(m['baseline'], m['baseline_metrics'])}"
        f" | {m['nfe']} NFE, {m['seconds']:.1f} s -> {run_dir}"
    )


if __name__ == "__main__":
    main()
