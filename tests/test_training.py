import csv

import pytest
import torch

from invdiff.priors.unet import edm_unet
from invdiff.training import TrainConfig, train


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net():
    torch.manual_seed(0)  # the initial weights of this test's network only
    return edm_unet(in_channels=2, channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(),
                    img_resolution=8, num_groups=4)


def _data():
    return torch.randn(12, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.5


def _cfg(steps):
    return TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup=2, checkpoint_every=3, log_every=1, seed=5)


def test_training_lowers_the_loss_and_logs(tmp_path):
    losses = []
    train(_net(), _data(), tmp_path, TrainConfig(steps=40, batch_size=8, lr=2e-3, warmup=5, checkpoint_every=20,
                                                 log_every=10, p_mean=0.0, p_std=0.5),
          on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 40
    assert sum(losses[-10:]) < sum(losses[:10])
    rows = list(csv.DictReader((tmp_path / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert (tmp_path / "checkpoint.pt").is_file()


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    whole = train(_net(), _data(), tmp_path / "whole", _cfg(6))
    train(_net(), _data(), tmp_path / "parts", _cfg(3))
    resumed = train(_net(), _data(), tmp_path / "parts", _cfg(6))
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    state = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6


def test_resume_refuses_other_settings(tmp_path):
    train(_net(), _data(), tmp_path, _cfg(3))
    other = _cfg(6)
    other.lr = 5e-4
    with pytest.raises(ValueError, match="saved with other settings"):
        train(_net(), _data(), tmp_path, other)
