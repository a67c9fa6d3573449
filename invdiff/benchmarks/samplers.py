"""Sampler cost: DDS overhead over its network, and DPS time per NFE against deepinv's DPS.

Times are the shortest of repeated runs (network and sampler alike), the estimate least
disturbed by other processes on a shared machine. All three measurements use the project's UNet (random weights, EDM preconditioning; the cost
of a forward pass does not depend on the weights) on the default MRI task (64 x 64, 8 coils,
4x equispaced lines; the prior sees real and imaginary parts as 2 channels), and the
end-to-end command ``python scripts/reconstruct.py task=mri sampler=dds``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from invdiff.benchmarks.common import best_ms, markdown_table, run_isolated



def _setup(size: int, threads: int):
    from invdiff.priors.unet import edm_unet
    from invdiff.problems import mri

    torch.set_num_threads(threads)
    torch.manual_seed(0)  # only the random network weights; nothing downstream draws from it
    task = mri(size=size)
    net = edm_unet(in_channels=2, img_resolution=size).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return task, net


class _Counted(torch.nn.Module):
    """The network, counting its forward passes (NFE as each sampler really spends them)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, sigma, *args, **kwargs):
        self.calls += 1
        return self.net(x, sigma)


def _per_nfe_ms(run, counted: _Counted, repeats: int) -> float:
    """Shortest run time divided by the forward passes one run makes."""
    counted.calls = 0
    run()
    calls = counted.calls
    return best_ms(run, repeats=repeats, warmup=0) / calls


def _network_ms(net, x: torch.Tensor, repeats: int, *, grad: bool) -> float:
    sigma = torch.full((x.shape[0],), 1.0)

    def forward():
        with torch.enable_grad() if grad else torch.no_grad():
            xi = x.clone().requires_grad_(grad)
            out = net(xi, sigma)
            if grad:
                torch.autograd.grad(out.sum(), xi)

    return best_ms(forward, repeats=repeats)


def dds_overhead(size: int, steps: int, threads: int, repeats: int) -> dict:
    """Wall time of DDS per NFE against the network's own forward time."""
    from invdiff.samplers import sample_dds
    from invdiff.schedules import sigmas_vp

    task, net = _setup(size, threads)
    net_ms = _network_ms(net, task.x_true, repeats, grad=False)
    sigmas = sigmas_vp(steps)

    counted = _Counted(net)

    def run():
        with torch.no_grad():
            sample_dds(counted, task.op, task.y, sigmas, noise_std=task.noise_std,
                       generator=torch.Generator().manual_seed(0), shape=tuple(task.x_true.shape))

    per_nfe = _per_nfe_ms(run, counted, repeats)
    return {"method": f"invdiff DDS ({steps} steps, 5 CG)", "per_nfe_ms": per_nfe, "net_ms": net_ms,
            "overhead": per_nfe / net_ms - 1}


def dps_invdiff(size: int, steps: int, threads: int, repeats: int) -> dict:
    from invdiff.samplers import sample_dps
    from invdiff.schedules import sigmas_vp

    task, net = _setup(size, threads)
    net_ms = _network_ms(net, task.x_true, repeats, grad=True)
    sigmas = sigmas_vp(steps)

    counted = _Counted(net)

    def run():
        sample_dps(counted, task.op, task.y, sigmas, noise_std=task.noise_std,
                   generator=torch.Generator().manual_seed(0), shape=tuple(task.x_true.shape))

    per_nfe = _per_nfe_ms(run, counted, repeats)
    return {"method": f"invdiff DPS ({steps} steps)", "per_nfe_ms": per_nfe, "net_ms": net_ms,
            "overhead": per_nfe / net_ms - 1}


def dps_deepinv(size: int, steps: int, threads: int, repeats: int) -> dict:
    from deepinv.sampling import DPS

    from operators.interop import to_deepinv

    task, net = _setup(size, threads)
    net_ms = _network_ms(net, task.x_true, repeats, grad=True)
    physics = to_deepinv(task.op)
    counted = _Counted(net)
    sampler = DPS(counted, num_steps=steps, dtype=torch.float32, rng=torch.Generator().manual_seed(0))

    def run():
        sampler(task.y, physics, x_init=tuple(task.x_true.shape))

    per_nfe = _per_nfe_ms(run, counted, repeats)
    return {"method": f"deepinv DPS ({steps} steps, same network and operator)", "per_nfe_ms": per_nfe,
            "net_ms": net_ms, "overhead": per_nfe / net_ms - 1}


def main_job(threads: int, data_root: str) -> float:
    """Seconds of the main job's work (the default MRI problem, the shipped prior, DDS with its
    config, the run directory written) in this process; the data root may hold a built dataset."""
    from invdiff.priors.packaged import load_packaged
    from invdiff.problems import mri
    from invdiff.run import Method, reconstruct, save_result

    torch.set_num_threads(threads)
    start = time.perf_counter()
    problem = mri(image="mri_brain", data_root=data_root)
    method = Method("dds", sampler="dds", steps=50, params={"cg_steps": 5, "eta": 0.85})
    result = reconstruct(problem, load_packaged("mri_brain_64"), method, seed=0)
    with tempfile.TemporaryDirectory() as run_dir:
        save_result(result, problem, Path(run_dir), "")
    return time.perf_counter() - start


def main_job_times(threads: int) -> dict:
    """The main job on a fresh data root (the first run builds the held-out brain slices) and
    again on the same root, each in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        return {key: run_isolated(main_job, threads=threads, data_root=f"{tmp}/data") for key in ("first_s", "second_s")}


COLUMNS = [
    ("method", "method", "s"),
    ("per_nfe_ms", "wall time per NFE (ms)", ".1f"),
    ("net_ms", "network alone (ms)", ".1f"),
    ("overhead", "overhead over the network", ".1%"),
]


def sampler_benchmark(*, size: int, dds_steps: int, dps_steps: int, threads: int, repeats: int) -> str:
    """DDS overhead, DPS against deepinv, and the end-to-end MRI command, as markdown."""
    common = {"size": size, "threads": threads, "repeats": repeats}
    rows = [
        run_isolated(dds_overhead, steps=dds_steps, **common),
        run_isolated(dps_invdiff, steps=dps_steps, **common),
        run_isolated(dps_deepinv, steps=dps_steps, **common),
    ]
    command = main_job_times(threads)
    return "\n".join(
        [
            f"### Sampler cost, MRI {size}x{size}, 8 coils, project UNet (2 channels), {threads} threads",
            "",
            "The network column is one forward pass for DDS and one forward plus backward pass "
            "(the guidance gradient) for DPS.",
            "",
            markdown_table(rows, COLUMNS),
            "",
            "### The main job (`python scripts/reconstruct.py task=mri sampler=dds`, without interpreter start-up)",
            "",
            f"- first run on a fresh data root (builds the held-out brain slices): {command['first_s']:.1f} s",
            f"- second run (data built): {command['second_s']:.1f} s",
        ]
    )
