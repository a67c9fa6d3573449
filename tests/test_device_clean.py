"""Device-clean hot paths, checked on the CPU: samplers, baselines, operators and priors on a fake GPU.

:class:`FakeGPU` runs code under ``torch._subclasses.fake_tensor.FakeTensorMode``, so that
tensors on ``"cuda"`` exist (shapes, dtypes, devices) without a GPU or a driver, while CPU tensors
stay real. Two kinds of mistake then show:

* A CPU tensor that meets a device tensor in an operation raises
  ``FakeTensorDeviceMismatchError``, as on a real GPU (0-dim CPU tensors pass, as there).
* Every host synchronisation is counted: reading a device value (``.item()``, ``float(t)``,
  ``bool(t)``, ``.tolist()``: ``aten._local_scalar_dense``), and every copy between host and
  device (``.cpu()``, ``.to(device)`` of a host tensor, ``torch.tensor(v, device=...)``: a
  blocking copy waits for the device in both directions). An operation whose output shape depends
  on device data (``nonzero``, boolean indexing) raises, since it cannot be faked and
  synchronises too.

Device values are unknown: a read returns a stand-in (``True``, ``1``, ``1.0``), except for values
that came from the host by copies and views only (a schedule moved to the device, as
:func:`invdiff.run.run_method` passes it), which keep their host values. Control flow that
depends on device data takes the stand-in's branch: every finiteness test passes, every
"any sample still active?" test says yes (CG runs to ``max_iter``), every problem resamples.

The counts are asserted per step: each sampler's callback marks the step boundaries, and the
number of synchronisations between consecutive marks is its budget (:data:`SYNCS_PER_STEP`). What
stays, and why, is written next to each number.

Exceptions, each for a reason found here:

* Samplers that differentiate through the prior (:data:`GRADIENT`) run on fake ``"meta"`` tensors:
  on a fake CUDA tensor the autograd engine asks the CUDA driver for the device's context
  (``hasPrimaryContext expects a valid device index``), which a machine without one cannot
  answer. ``meta`` is a device too, so mixing and synchronisations are caught the same way; only
  copies of Python numbers to the device (``torch.tensor(v, device=...)``) are not visible there,
  and the CUDA runs of the other samplers, which share the priors, catch those.
* ``deepinv_dps`` and ``deepinv_diffpir`` wrap deepinv, which synchronises in its own loops
  (``if noise_std > 0`` on a tensor in ``deepinv.sampling.sde_solver``, ``find_nearest`` in
  ``DiffPIR``): ``deepinv_dps`` is checked for device mixing only; ``deepinv_diffpir`` is not run,
  since it needs the CUDA driver to fork the CUDA random state (``torch.random.fork_rng``) and
  deepinv reads device values inside it.
* ``l1_wavelet`` is sigpy's FISTA, which runs in numpy on the host by design.
* The ``deepinv_roundtrip`` operator keeps our operator inside deepinv's physics, where
  ``Operator.to`` cannot move its buffers: they follow the input to the device on every call.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorDeviceMismatchError, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from invdiff.priors.adapters import VPDenoiser
from invdiff.priors.adm import ADMUNet
from invdiff.priors.gaussian import LowRankGaussian
from invdiff.priors.gmm import GaussianMixture
from invdiff.priors.unet import edm_unet
from invdiff.samplers import BASELINES, SAMPLERS, UNCONDITIONAL
from invdiff.samplers.common import check_sigmas
from operators.base import RealToComplex
from operators.cg import CHECK_EVERY_ON_DEVICE
from operators.ct import FanBeamCT, ParallelBeamCT
from operators.mri import MultiCoilMRI
from operators.nonlinear import PhaseRetrieval, TransmissionCT
from tests.operators.cases import LINEAR_CASES

aten = torch.ops.aten
DATA_DEPENDENT_SHAPES = {
    aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
    aten.unique_consecutive.default,
}
_REAL_GENERATOR = torch.Generator
_FAKE_TOLIST = FakeTensor.tolist


class FakeGenerator(torch.Generator):
    """A CPU generator that says it lives on ``device`` (a fake one cannot be made for CUDA here)."""

    def __new__(cls, device: str | torch.device = "cpu"):
        return super().__new__(cls)

    def __init__(self, device: str | torch.device = "cpu"):
        self.fake_device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self.fake_device


class _GeneratorFactory(type):
    """``torch.Generator`` while faking: a :class:`FakeGenerator` for a device, a real one for the CPU."""

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, _REAL_GENERATOR)

    def __call__(cls, device: str | torch.device = "cpu"):
        if torch.device(device).type == "cpu":
            return _REAL_GENERATOR(device)
        return FakeGenerator(device)


class _Generator(metaclass=_GeneratorFactory):
    pass


def _tolist(self: FakeTensor) -> list:
    """A device tensor's ``tolist`` copies it to the host once, as torch does on a real device."""
    return _FAKE_TOLIST(self) if self.device.type == "cpu" else self.cpu().tolist()


class FakeGPU(TorchDispatchMode):
    """Host tensors real, device tensors fake; counts host synchronisations (module docstring).

    Use as ``with FakeGPU() as gpu:``; ``gpu.syncs`` lists what synchronised, in order.
    """

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []
        self.known = WeakTensorKeyDictionary()
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        self._stack.enter_context(mock.patch.object(torch, "Generator", _Generator))
        self._stack.enter_context(mock.patch.object(FakeTensor, "tolist", _tolist))
        self._stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._stack.close()

    def _is_known(self, t: torch.Tensor) -> bool:
        return (not isinstance(t, FakeTensor) and t.device.type == "cpu") or t in self.known

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        target = kwargs.get("device")
        target = None if target is None else torch.device(target).type
        on_device = any(t.device.type != "cpu" for t in tensors)
        # 1. Count the synchronisations: reads of device values, copies between host and device.
        if func is aten._local_scalar_dense.default and on_device:
            self.syncs.append("read")
        if func in (aten._to_copy.default, aten.copy_.default):
            source, dest = (args[1], args[0]) if func is aten.copy_.default else (args[0], None)
            where = (dest.device.type if dest is not None else target) or source.device.type
            if where != source.device.type:
                self.syncs.append(f"copy {source.device.type} -> {where}")
        if func in DATA_DEPENDENT_SHAPES and on_device:
            raise RuntimeError(f"{func}: an output shape that depends on device data (a synchronisation)")
        # 2. Host work runs for real.
        host = all(not isinstance(t, FakeTensor) and t.device.type == "cpu" for t in tensors)
        if host and target in (None, "cpu"):
            with _disable_current_modes():
                return func(*args, **kwargs)
        # 3. Values that came from the host by copies and views are computed on the host alongside.
        known = bool(tensors) and all(self._is_known(t) for t in tensors)
        if known:
            host_args, host_kwargs = tree_map(
                lambda t: self.known.get(t, t) if isinstance(t, FakeTensor) else t, (args, kwargs)
            )
            if "device" in host_kwargs:
                host_kwargs = {**host_kwargs, "device": "cpu"}
            with _disable_current_modes():
                value = func(*host_args, **host_kwargs)
        if func is aten._local_scalar_dense.default:
            if known:
                return value
            t = args[0]
            return True if t.dtype == torch.bool else 1.0 if (t.is_floating_point() or t.is_complex()) else 1
        out = func(*args, **kwargs)
        if known:
            outs, values = (out, value) if isinstance(out, (tuple, list)) else ((out,), (value,))
            for o, v in zip(outs, values):
                if isinstance(o, FakeTensor) and o.device.type != "cpu":
                    self.known[o] = v
            if isinstance(out, FakeTensor) and out.device.type == "cpu":
                return value
        return out


def _step_syncs(marks: list[int]) -> list[int]:
    """Synchronisations between consecutive callbacks (one interval per step)."""
    return [b - a for a, b in zip(marks, marks[1:])]


# --- problems on the fake device ----------------------------------------------------------------


def _unet(channels: int):
    """The project's U-Net at a tiny width under EDM preconditioning (built on the host)."""
    return edm_unet(
        in_channels=channels, channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(),
        img_resolution=8, num_groups=4,
    )


def _mri_problem(device: str):
    """Two 8 x 8 two-channel images through a 3-coil MRI operator (complex measurements)."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 8, 8, dtype=torch.complex64, generator=g)
    mask = (torch.rand(8, 8, generator=g) > 0.4).float()
    op = (MultiCoilMRI(maps, mask) @ RealToComplex()).to(device)
    y = op.A(torch.rand(2, 2, 8, 8, device=device))
    return _unet(2).to(device), op, y


def _ct_volume(device: str):
    """A volume of three 8 x 8 slices through a 6-view parallel-beam projector."""
    op = ParallelBeamCT((8, 8), 6).to(device)
    y = op.A(torch.rand(3, 1, 8, 8, device=device))
    return _unet(1).to(device), op, y


SIGMAS = [4.0, 2.0, 1.0, 0.5, 0.25, 0.0]
"""Five steps; passed as a device tensor, as :func:`invdiff.run.run_method` does."""

VOLUME = {"diffusion_mbir", "diffusion_mbir_paper", "dds3d"}
GRADIENT = {"dps", "reddiff", "tds", "deepinv_dps", "pigdm", "ads"}
"""Samplers that differentiate through the prior: run on fake ``meta`` tensors (module docstring)."""
PARTICLES = {"smc_ensemble": 3, "twisted_ensemble": 3, "tds": 3, "afdps": 3, "fps": 3, "mcgdiff": 3, "ads": 3}

SYNCS_PER_STEP = {
    # The state's finiteness check, which names the step that broke.
    "dps": 1,
    "reddiff": 1,
    # One check of the Tweedie estimate and the new state together; CG's few iterations (5) test
    # convergence only every CHECK_EVERY_ON_DEVICE = 10 on a device and leave finiteness to it.
    "dds": 1,
    "diffusion_mbir": 1,
    "dds3d": 1,
    "diffusion_mbir_paper": 1,
    # The resampling decision (which problems resample decides what is gathered) and the check.
    "smc_ensemble": 2,
    "twisted_ensemble": 2,
    "tds": 2,
    # Euler without resampling: the check only.
    "afdps": 1,
    "deepinv_dps": None,  # deepinv synchronises in its own loop
    # The linear-algebra samplers on multi-coil MRI solve by conjugate gradient (up to 100
    # iterations, a convergence test every CHECK_EVERY_ON_DEVICE = 10) after a finiteness check of
    # the right-hand side, then check the step: DDRM's and DDNM's pinv, ΠGDM's and DiffPIR's
    # solve_normal (a list: the syncs of each step where the last differs, DDNM's projection-free
    # last step, the SMC samplers' last step without a move).
    "ddrm": 12,
    "ddnm": [12, 12, 12, 1],
    "pigdm": 13,
    "diffpir": 13,
    # Langevin on x0 with the closed-form gradient: the check only.
    "daps": 1,
    # A Woodbury solve for the weights and a perturb-and-solve move per step, the resampling
    # decision and the check.
    "fps": [24, 24, 24, 13],
    "mcgdiff": [24, 24, 24, 13],
    # ADS on a fixed mask (no budget): DPS's check only.
    "ads": 1,
}
EXTRA_CASES = {
    # The conditioned integrator's two CG solves of 20 iterations test convergence once each (at
    # iteration 10), then the resampling decision and the check.
    "afdps_conditioned": ("afdps", {"integrator": "conditioned", "resample": True, "cg_steps": 20}, 4),
    # ADS acquiring a line at steps 1 and 2 (DDS between): the new operator's mask checks (values,
    # line structure) at those steps, the check alone at the others.
    "ads_active": ("ads", {"guidance": "dds", "budget": 4, "start": 2, "schedule": [[1, 1], [2, 1]]}, [5, 5, 1, 1]),
}
NOT_RUN = {"deepinv_diffpir": "forks the CUDA random state, which needs the CUDA driver (module docstring)"}


def _run_sampler(name: str, fn, extra: dict) -> tuple[FakeGPU, list[int], torch.Tensor]:
    device = "meta" if name in GRADIENT else "cuda"
    with FakeGPU() as gpu:
        prior, op, y = (_ct_volume if name in VOLUME else _mri_problem)(device)
        sigmas = torch.tensor(SIGMAS, dtype=torch.float64).to(device)
        kwargs = {"num_particles": PARTICLES[name]} if name in PARTICLES else {}
        marks: list[int] = []
        gpu.syncs.clear()
        x, _ = fn(
            prior, op, y, sigmas, noise_std=0.1, generator=FakeGenerator(device),
            callback=lambda state: marks.append(len(gpu.syncs)), **kwargs, **extra,
        )
    assert x.device.type == device
    return gpu, marks, x


CASES = {name: (name, {}, SYNCS_PER_STEP[name]) for name in SAMPLERS if name not in NOT_RUN}
CASES.update(EXTRA_CASES)


def test_every_sampler_is_covered():
    assert set(SAMPLERS) == set(SYNCS_PER_STEP) | set(NOT_RUN)


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_on_fake_gpu(case):
    """Runs on device tensors without touching a host tensor, with the per-step budget of syncs."""
    name, extra, budget = CASES[case]
    gpu, marks, _ = _run_sampler(name, SAMPLERS[name], extra)
    assert len(marks) >= len(SIGMAS) - 1
    if budget is not None:
        expected = budget if isinstance(budget, list) else [budget] * (len(marks) - 1)
        assert _step_syncs(marks) == expected, gpu.syncs


def test_schedule_on_the_device_comes_back_in_one_copy():
    with FakeGPU() as gpu:
        values = check_sigmas(torch.tensor(SIGMAS, dtype=torch.float64).to("cuda"))
    assert values == SIGMAS and gpu.syncs == ["copy cpu -> cuda", "copy cuda -> cpu"]


@pytest.mark.parametrize("name", sorted(UNCONDITIONAL))
def test_unconditional_sampler_on_fake_gpu(name):
    """One synchronisation per step: the state's finiteness check."""
    with FakeGPU() as gpu:
        prior = _unet(2).to("cuda")
        sigmas = torch.tensor(SIGMAS, dtype=torch.float64).to("cuda")
        marks: list[int] = []
        x, _ = UNCONDITIONAL[name](
            prior, sigmas, shape=(2, 2, 8, 8), generator=FakeGenerator("cuda"),
            callback=lambda state: marks.append(len(gpu.syncs)),
        )
    assert x.device.type == "cuda"
    assert _step_syncs(marks) == [1] * (len(marks) - 1), gpu.syncs


# --- baselines ----------------------------------------------------------------------------------

BASELINE_SYNCS = {
    # Every baseline checks that y is finite (one synchronisation).
    "adjoint": ("mri", {}, 1),
    # CG's 30 iterations test convergence at 10 and 20, then finiteness once.
    "cg": ("mri", {}, 1 + 30 // CHECK_EVERY_ON_DEVICE - 1 + 1),
    # CG-SENSE of 100 iterations: pinv's check of y, tests at 10 .. 90, finiteness.
    "pinv": ("mri", {}, 1 + 1 + 100 // CHECK_EVERY_ON_DEVICE - 1 + 1),
    # FBP checks its sinogram again; after the logarithm, fbp_baseline checks it a third time.
    "fbp": ("ct", {}, 2),
    "postlog_fbp": ("transmission", {}, 3),
    "error_reduction": ("phase", {"iterations": 3}, 1),
    "zero_filled": ("mri", {}, 1),
    "tv": ("ct", {"iterations": 3}, 1),
}
BASELINES_NOT_RUN = {"l1_wavelet": "sigpy runs in numpy on the host (module docstring)"}


def _baseline_problem(kind: str, device: str):
    g = torch.Generator().manual_seed(0)
    if kind == "mri":
        maps = torch.randn(3, 8, 8, dtype=torch.complex64, generator=g)
        op = (MultiCoilMRI(maps, (torch.rand(8, 8, generator=g) > 0.4).float()) @ RealToComplex()).to(device)
        x = torch.rand(2, 2, 8, 8, device=device)
    elif kind == "ct":
        op, x = FanBeamCT((8, 8), 9).to(device), torch.rand(2, 1, 8, 8, device=device)
    elif kind == "transmission":
        op, x = TransmissionCT(ParallelBeamCT((8, 8), 6).to(device)), torch.rand(2, 1, 8, 8, device=device)
    else:
        op, x = PhaseRetrieval(2.0), torch.rand(2, 1, 8, 8, device=device)
    return op, op.A(x)


def test_every_baseline_is_covered():
    assert set(BASELINES) == set(BASELINE_SYNCS) | set(BASELINES_NOT_RUN)


@pytest.mark.parametrize("name", sorted(BASELINE_SYNCS))
def test_baseline_on_fake_gpu(name):
    kind, options, budget = BASELINE_SYNCS[name]
    with FakeGPU() as gpu:
        op, y = _baseline_problem(kind, "cuda")
        gpu.syncs.clear()
        x, _ = BASELINES[name](op, y, **options)
    assert x.device.type == "cuda"
    assert len(gpu.syncs) == budget, gpu.syncs


# --- operators ----------------------------------------------------------------------------------

OPERATORS_NOT_RUN = {"deepinv_roundtrip": "Operator.to cannot reach into deepinv's physics (docstring)"}


@pytest.mark.parametrize("name", sorted(set(LINEAR_CASES) - set(OPERATORS_NOT_RUN)))
def test_operator_on_fake_gpu(name):
    """``A``, ``AT`` and ``normal`` of an operator moved to the device never synchronise; ``pinv``
    checks ``y`` (one synchronisation) and, without a closed form, runs CG (11 iterations here: one
    convergence test, at iteration 10, and one finiteness test)."""
    with FakeGPU() as gpu:
        op, x = LINEAR_CASES[name](torch.float32, "cpu")
        op, x = op.to("cuda"), torch.randn(x.shape, dtype=x.dtype, device="cuda")
        gpu.syncs.clear()
        y = op.A(x)
        out = (y, op.AT(y), op.normal(x))
        assert gpu.syncs == []
        out += (op.pinv(y, max_iter=CHECK_EVERY_ON_DEVICE + 1),)
    assert all(t.device.type == "cuda" for t in out)
    assert len(gpu.syncs) in (1, 3), gpu.syncs


@pytest.mark.parametrize("name", ["phase_retrieval", "transmission_ct"])
def test_nonlinear_operator_on_fake_gpu(name):
    with FakeGPU() as gpu:
        if name == "phase_retrieval":
            op = PhaseRetrieval(2.0, intensity=True)
        else:
            op = TransmissionCT(FanBeamCT((9, 7), 5).to("cuda"), I0=100.0)
        x = torch.rand(2, 1, 9, 7, device="cuda")
        gpu.syncs.clear()
        y = op.A(x)
    assert y.device.type == "cuda" and gpu.syncs == []


# --- priors -------------------------------------------------------------------------------------


def _adm_vp():
    """The guided-diffusion network at a tiny width behind the VP adapter (float64 timestep buffers)."""
    net = ADMUNet(
        image_size=8, in_channels=2, model_channels=32, num_res_blocks=1, attention_resolutions=(4,),
        channel_mult=(1, 2), num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
        learn_sigma=True,
    )
    return VPDenoiser(net, data_scale=2.0, data_shift=-1.0)


def _gaussian():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(128, 4, generator=g))
    variances = torch.rand(4, generator=g) + 0.1
    return LowRankGaussian(torch.rand(128, generator=g), basis, variances, 0.01, (2, 8, 8))


def _mixture():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 128, generator=g, dtype=torch.float64)
    return GaussianMixture(means, 0.5 * torch.eye(128, dtype=torch.float64).expand(3, 128, 128))


PRIORS = {
    "edm_unet": lambda: _unet(2), "adm_vp": _adm_vp, "low_rank_gaussian": _gaussian, "mixture": _mixture,
}


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_prior_on_fake_gpu(name):
    """A prior moved to the device takes sigma as a Python number, a 0-dim or a ``(B,)`` device tensor
    without a host synchronisation (a number is filled in on the device, not copied there)."""
    with FakeGPU() as gpu:
        prior = PRIORS[name]().to("cuda")
        x = torch.randn(2, 2, 8, 8, device="cuda")
        sigmas = (0.7, torch.full((), 0.7, device="cuda"), torch.full((2,), 0.7, device="cuda"))
        gpu.syncs.clear()
        out = [prior(x, sigma) for sigma in sigmas]
    assert all(t.device.type == "cuda" and t.shape == x.shape for t in out)
    assert gpu.syncs == []


# --- the guard itself ---------------------------------------------------------------------------


def test_fake_gpu_catches_host_tensors_and_synchronisations():
    with FakeGPU() as gpu:
        x = torch.randn(2, 3, device="cuda")
        with pytest.raises(FakeTensorDeviceMismatchError):
            x + torch.ones(2, 3)
        assert (x * torch.tensor(2.0)).device.type == "cuda"  # a 0-dim host tensor is a scalar
        assert gpu.syncs == []
        bool(x.sum() > 0)
        torch.tensor(0.5, device="cuda")
        x.cpu()
        assert gpu.syncs == ["read", "copy cpu -> cuda", "copy cuda -> cpu"]
        with pytest.raises(RuntimeError, match="depends on device data"):
            x.nonzero()
        schedule = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64).to("cuda")
        assert schedule.cpu().tolist() == [2.0, 1.0, 0.0]
