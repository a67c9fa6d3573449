import csv
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from invdiff.priors.unet import edm_unet, load_prior, save_prior
from invdiff.run import _warn_below_training_size
from invdiff.training import TrainConfig, random_windows, train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"channels": 8, "channel_mult": (1, 2), "num_blocks": 1, "attn_resolutions": (), "img_resolution": 8,
        "num_groups": 4}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net():
    return edm_unet(in_channels=2, seed=0, **TINY)


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


def _resume_equals_whole(data, cfg, tmp_path):
    """Train 6 steps at once and 3 + 3 with a resume; assert equal weights; return the whole run's network."""
    whole = train(_net(), data, tmp_path / "whole", cfg(6))
    train(_net(), data, tmp_path / "parts", cfg(3))
    resumed = train(_net(), data, tmp_path / "parts", cfg(6))
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    return whole


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    _resume_equals_whole(_data(), _cfg, tmp_path)
    state = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6


def test_resume_refuses_other_settings(tmp_path):
    train(_net(), _data(), tmp_path, _cfg(3))
    other = _cfg(6)
    other.lr = 5e-4
    with pytest.raises(ValueError, match="saved with other settings"):
        train(_net(), _data(), tmp_path, other)


def _rows(path: Path) -> list[tuple[int, str]]:
    """``(step, loss)`` of every row of a ``loss.csv``."""
    return [(int(r["step"]), r["loss"]) for r in csv.DictReader(path.open())]


@pytest.mark.hostile
def test_initial_weights_come_from_the_seed_and_leave_the_global_rng():
    state = torch.get_rng_state()
    a = edm_unet(in_channels=2, seed=3, **TINY)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    b = edm_unet(in_channels=2, seed=3, **TINY)
    c = edm_unet(in_channels=2, seed=4, **TINY)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert a.model.stem.weight.std() > 0  # drawn, not constant


def _train_script():
    spec = importlib.util.spec_from_file_location("train_prior", ROOT / "scripts" / "train_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.hostile
def test_train_script_runs_with_the_same_seed_start_from_the_same_weights(tmp_path):
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "train.npy", _data().numpy())
    main = _train_script()
    for name, train_seed, global_seed in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        overrides = [
            f"data={tmp_path / 'data'}", f"out_dir={tmp_path / name}", "threads=1", "network.channels=8",
            "network.channel_mult=[1,2]", "network.num_blocks=1", "network.attn_resolutions=[]",
            "network.img_resolution=8", "+network.num_groups=4", "train.steps=1", "train.batch_size=2",
            "train.warmup=1000000", f"train.seed={train_seed}", "train.checkpoint_every=1", "samples.every=1",
            "samples.count=1", "samples.steps=2",
        ]
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
            cfg = compose(config_name="train", overrides=overrides)
        torch.manual_seed(global_seed)  # another global RNG state in each run
        main(cfg)
    a, b, c = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=True)["model"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # One step at a learning rate of 2e-10 (warm-up) moves no weight by 1e-3: c starts elsewhere.
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-3


class _Killed(Exception):
    """Stands in for a run killed between two checkpoints."""


@pytest.mark.hostile
@pytest.mark.parametrize("log_every", [1, 2])
def test_resume_after_a_kill_logs_each_step_once(log_every, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup=2, checkpoint_every=3, log_every=log_every, seed=5)

    def kill(step, loss):
        if step == 5:
            raise _Killed

    with pytest.raises(_Killed):
        train(_net(), _data(), tmp_path / "parts", cfg, on_step=kill)
    train(_net(), _data(), tmp_path / "parts", cfg)
    train(_net(), _data(), tmp_path / "whole", cfg)
    whole = _rows(tmp_path / "whole" / "loss.csv")
    assert [s for s, _ in whole] == list(range(log_every, 7, log_every))
    assert _rows(tmp_path / "parts" / "loss.csv") == whole


@pytest.mark.hostile
def test_fresh_run_replaces_a_stale_loss_log(tmp_path):
    (tmp_path / "loss.csv").write_text("step,loss,seconds\n1,9.0,0.1\n2,9.0,0.2\n7,9.0,0.7\n")
    train(_net(), _data(), tmp_path, _cfg(2))
    assert (tmp_path / "loss.csv").read_text().count("step") == 1
    assert [s for s, _ in _rows(tmp_path / "loss.csv")] == [1, 2]


@pytest.mark.hostile
@pytest.mark.parametrize("key, value, expected", [
    ("steps", "abc", "a positive integer"),
    ("steps", 0, "a positive integer"),
    ("batch_size", 2.5, "a positive integer"),
    ("checkpoint_every", -1, "a positive integer"),
    ("log_every", None, "a positive integer"),
    ("warmup", -1, "a non-negative integer"),
    ("seed", "x", "an integer"),
    ("lr", float("nan"), "a finite positive number"),
    ("lr", 0.0, "a finite positive number"),
    ("lr", "2e-4x", "a finite positive number"),
    ("ema_decay", 1.0, r"a number in \[0, 1\)"),
    ("ema_decay", -0.1, r"a number in \[0, 1\)"),
    ("p_std", float("inf"), "a finite positive number"),
    ("p_mean", float("nan"), "a finite number"),
    ("flip", "yes", "true or false"),
    ("patch_size", 0, "null or a positive integer"),
    ("patch_size", "64", "null or a positive integer"),
    ("patch_size", 6.5, "null or a positive integer"),
])
def test_train_config_names_a_bad_value(key, value, expected):
    with pytest.raises(ValueError, match=rf"train\.{key}: expected {expected}, got"):
        TrainConfig(**{key: value})


@pytest.mark.hostile
def test_train_config_accepts_whole_floats_as_integers():
    cfg = TrainConfig(steps=4000.0, batch_size=8, lr=1)
    assert cfg.steps == 4000 and isinstance(cfg.steps, int) and cfg.lr == 1.0


@pytest.mark.hostile
def test_train_script_refuses_bad_steps_before_any_work(tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        overrides = [f"data={tmp_path / 'absent'}", f"out_dir={tmp_path / 'out'}", "train.steps=abc"]
        cfg = compose(config_name="train", overrides=overrides)
    with pytest.raises(ValueError, match=r"train\.steps: expected a positive integer, got 'abc'"):
        _train_script()(cfg)
    assert not (tmp_path / "out").exists()


def _windows_data():
    """``(3, 1, 20, 24)`` images whose pixels spell ``(image, row, column)``: ``10000 n + 100 h + w``."""
    n, h, w = torch.meshgrid(torch.arange(3), torch.arange(20), torch.arange(24), indexing="ij")
    return (10000 * n + 100 * h + w).float()[:, None]


def test_patch_windows_lie_inside_the_images_and_follow_the_seed():
    data = _windows_data()
    idx = torch.tensor([0, 2, 1, 2, 0, 1] * 20)
    windows = random_windows(data, idx, 8, torch.Generator().manual_seed(3))
    assert windows.shape == (120, 1, 8, 8)
    for i, window in zip(idx.tolist(), windows):
        corner = int(window[0, 0, 0])
        n, top, left = corner // 10000, corner // 100 % 100, corner % 100
        assert n == i and top + 8 <= 20 and left + 8 <= 24
        assert torch.equal(window, data[n, :, top : top + 8, left : left + 8])
    tops, lefts = windows[:, 0, 0, 0] // 100 % 100, windows[:, 0, 0, 0] % 100
    # The extreme positions are drawn too.
    assert {0, 12} <= set(tops.int().tolist()) and {0, 16} <= set(lefts.int().tolist())
    again = random_windows(data.numpy().astype(np.float32), idx, 8, torch.Generator().manual_seed(3))
    assert torch.equal(windows, again)
    assert not torch.equal(windows, random_windows(data, idx, 8, torch.Generator().manual_seed(4)))


def _patch_cfg(steps, patch_size=8):
    return TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup=2, checkpoint_every=3, log_every=1, seed=5,
                       patch_size=patch_size)


def _native_data():
    return torch.randn(3, 2, 20, 24, generator=torch.Generator().manual_seed(1)) * 0.5


def test_resumed_patch_run_equals_uninterrupted_run(tmp_path):
    whole = _resume_equals_whole(_native_data(), _patch_cfg, tmp_path)
    cfg = _patch_cfg(6)
    cfg.seed = 6
    other = train(_net(), _native_data(), tmp_path / "other", cfg)
    assert any(not torch.equal(a, b) for a, b in zip(whole.parameters(), other.parameters()))


@pytest.mark.parametrize("patch_size, message", [
    (24, r"expected at most the images' size 20 x 24, got 24"),
    (7, r"expected a multiple of the network's size_multiple 2, got 7"),
    (12, r"12, but the network declares a training size of 8 x 8; build it with img_resolution=12"),
])
def test_train_refuses_a_patch_size_the_data_or_network_cannot_take(patch_size, message, tmp_path):
    with pytest.raises(ValueError, match=rf"train\.patch_size: {message}"):
        train(_net(), _native_data(), tmp_path, _patch_cfg(1, patch_size))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_patch_prior_says_so_and_warns_only_below_its_patch_size(tmp_path):
    prior = edm_unet(in_channels=2, seed=0, patches=True, **TINY)
    save_prior(tmp_path / "p.pt", prior)
    loaded = load_prior(tmp_path / "p.pt")
    assert loaded.patches and loaded.shape == (2, 8, 8) and loaded.config["patches"] is True
    assert "patches" not in edm_unet(in_channels=2, seed=0, **TINY).config
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_below_training_size(loaded, (1, 2, 64, 96))
    with pytest.warns(UserWarning, match=r"trained on 8 x 8 patches, run on 2 x 64"):
        _warn_below_training_size(loaded, (1, 2, 2, 64))


def test_train_script_trains_a_patch_prior_on_larger_images(tmp_path):
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "train.npy", _native_data().numpy())
    overrides = [
        f"data={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}", f"export={tmp_path / 'prior.pt'}",
        "threads=1", "network.channels=8", "network.channel_mult=[1,2]", "network.num_blocks=1",
        "network.attn_resolutions=[]", "+network.num_groups=4", "train.steps=1", "train.batch_size=2",
        "train.patch_size=8", "train.checkpoint_every=1", "samples.every=1", "samples.count=1",
        "samples.steps=2",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose(config_name="train", overrides=overrides)
    _train_script()(cfg)
    prior = load_prior(tmp_path / "prior.pt")
    assert prior.patches and prior.shape == (2, 8, 8) and prior.model.config["img_resolution"] == 8
    assert prior(torch.zeros(1, 2, 20, 24), 1.0).shape == (1, 2, 20, 24)  # runs on the whole images
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["config"]["patch_size"] == 8
