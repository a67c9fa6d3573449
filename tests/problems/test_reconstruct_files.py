"""``scripts/reconstruct.py`` end to end on RGB tasks, a DICOM file and a sinogram file (tiny, CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from invdiff.problems import ct, ct_sinogram, write_sinogram
from invdiff.run import Method, reconstruct


# the packaged 64 x 64 priors run here on small images on purpose
pytestmark = pytest.mark.filterwarnings("ignore:prior .* trained at:UserWarning")

ROOT = Path(__file__).resolve().parents[2]
TINY_ADM = {
    "image_size": 16, "in_channels": 3, "model_channels": 32, "num_res_blocks": 1,
    "attention_resolutions": [8], "channel_mult": [1, 2], "num_head_channels": 16, "learn_sigma": True,
}
OUTPUTS = ("reconstruction.npy", "baseline.npy", "metrics.json", "figure.png", "config.yaml")


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "scripts/reconstruct.py", f"hydra.run.dir={tmp_path / 'run'}",
            f"data_root={tmp_path / 'data'}", "sampler.steps=3", "progress=false", *overrides]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _outputs(tmp_path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    run = tmp_path / "run"
    for name in OUTPUTS:
        assert (run / name).is_file(), name
    return (json.loads((run / "metrics.json").read_text()), np.load(run / "reconstruction.npy"),
            np.load(run / "baseline.npy"))


def _tiny_adm(tmp_path: Path) -> list[str]:
    """A random-weight 3-channel ADM checkpoint in the guided-diffusion layout, and its overrides."""
    from invdiff.priors.adm import ADMUNet

    path = tmp_path / "adm.pt"
    torch.save(ADMUNet(**TINY_ADM).state_dict(), path)
    config = f"{OmegaConf.to_container(OmegaConf.create(TINY_ADM))}".replace("'", "")
    return ["prior=adm", f"prior.path={path}", f"prior.config={config}"]


@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_rgb_task_with_an_rgb_adm_prior(task, tmp_path):
    overrides = [f"task={task}", "task.channels=3", "task.size=16", "sampler=dds"]
    proc = _run(tmp_path, *_tiny_adm(tmp_path), *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics, recon, baseline = _outputs(tmp_path)
    assert recon.shape == baseline.shape == (1, 3, 16, 16)
    assert np.isfinite(metrics["reconstruction"]["psnr"]) and metrics["problem"]["photograph"] == "astronaut"


def test_ct_of_a_dicom_file_at_its_own_size(tmp_path):
    dicom = pytest.importorskip("pydicom.data").get_testdata_file("CT_small.dcm", download=False)
    proc = _run(tmp_path, "task=ct", f"task.image={dicom}", "sampler=dds")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics, recon, _ = _outputs(tmp_path)
    assert recon.shape == (1, 1, 128, 128) and metrics["shape"] == [1, 1, 128, 128]
    assert np.isfinite(metrics["reconstruction"]["psnr"]) and metrics["problem"]["format"] == "dicom"


def test_sinogram_without_a_reference_is_reconstructed_and_not_scored(tmp_path):
    # 29 detectors: a 29 x 29 image, which the run pads to 32 for the prior.
    simulated = ct(size=20, views=12, noise_std=0.5, image="phantom")
    path = write_sinogram(tmp_path / "scan.npz", simulated.y[:, 0], simulated.op.angles)
    proc = _run(tmp_path, "task=ct_sinogram", f"task.file={path}", "sampler=dds")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics, recon, baseline = _outputs(tmp_path)
    assert recon.shape == baseline.shape == (1, 1, 29, 29) and np.isfinite(recon).all()
    assert metrics["reconstruction"] is None and metrics["baseline_metrics"] is None
    assert metrics["baseline"] == "fbp" and metrics["problem"]["noise_rule"] == "mad_second_difference"


def test_sinogram_with_a_reference_is_scored(tmp_path):
    from invdiff.priors.packaged import load_packaged

    simulated = ct(size=24, views=12, noise_std=0.5, image="phantom")
    path = write_sinogram(tmp_path / "scan.h5", simulated.y[:, 0], simulated.op.angles,
                          simulated.target[:, 0])
    problem = ct_sinogram(str(path))
    result = reconstruct(problem, load_packaged("ct_64"), Method("dds", sampler="dds", steps=3), seed=0)
    assert problem.x_shape == (1, 1, 24, 24)
    assert np.isfinite(result.metrics["reconstruction"]["psnr"])
    assert np.isfinite(result.metrics["baseline_metrics"]["psnr"])
