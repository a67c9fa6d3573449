"""One prepared run on a GPU: ``python scripts/device_check.py [device=cuda] [out=<folder>]``.

Runs the sections of :func:`invdiff.benchmarks.device.device_check` with the settings of
``configs/device_check/<full|tiny>.yaml`` and prints the markdown report; ``out`` receives
``device_check.json`` and ``device_check.md`` after every case. ``device=cpu
device_check=tiny`` runs every section at tiny size on a CPU (the test of this script).
"""

import functools
import sys
from pathlib import Path

import hydra
import torch
from hydra import compose
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from invdiff.benchmarks.device import SamplerCase, TimingCase, device_check
from invdiff.benchmarks.throughput import random_adm
from invdiff.problems import ct3d, mri
from invdiff.run import Method

ROOT = Path(__file__).resolve().parents[1]


def _sampler_options() -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs" / "sampler").glob("*.yaml"))


def _task_cases(spec: dict, data_root: str) -> list[SamplerCase]:
    """Every task of ``spec["tasks"]`` with every sampler, composed from ``configs/config.yaml``;
    each task's problem and prior are built once and shared by its samplers."""
    samplers = spec["samplers"] or _sampler_options()
    cases = []
    for task, overrides in spec["tasks"].items():
        built: dict = {}

        def once(key, cfg_node, built=built):
            if key not in built:
                built[key] = instantiate(cfg_node)
            return built[key]

        for sampler in samplers:
            cfg = compose(config_name="config", overrides=[
                f"task={task}", f"sampler={sampler}", f"sampler.steps={spec['steps']}", f"data_root={data_root}",
                *overrides])
            method = Method.from_sampler_config(OmegaConf.to_container(cfg.sampler, resolve=True),
                                                where=f"sampler={sampler}")
            cases.append(SamplerCase(task, sampler, functools.partial(once, "problem", cfg.task),
                                     functools.partial(once, "prior", cfg.prior), method))
    return cases


def _timing(spec: dict, key: str) -> list[TimingCase]:
    cases = []
    for i, entry in enumerate(spec["cases"]):
        entry = dict(entry)
        method = entry.pop("method", spec.get("method"))
        name = f"{key}{i}_{method['sampler']}"
        cases.append(TimingCase(name, method, **entry))
    return cases


@hydra.main(version_base="1.3", config_path="../configs", config_name="device_check")
def main(cfg: DictConfig) -> None:
    spec = OmegaConf.to_container(cfg.device_check, resolve=True)
    torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
    out = Path(to_absolute_path(cfg.out))
    data_root = to_absolute_path(cfg.data_root)
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *spec["tests"]]
    batch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
             str(ROOT / "scripts" / "benchmark.py"), *spec["batch"], f"benchmark.device={cfg.device}",
             f"benchmark.out_dir={out / 'batch'}", f"hydra.run.dir={out / 'batch' / 'hydra'}",
             f"data_root={data_root}"]
    dds, volume = spec["dds"], spec["volume"]
    # built once, shared by the dds and profile sections
    dds_problem = functools.cache(functools.partial(mri, size=dds["size"], coils=dds["coils"], image="phantom",
                                                    data_root=data_root))
    dds_prior = functools.cache(functools.partial(random_adm, dds["adm"], overrides=dds["adm_overrides"]))
    profiled = dict(spec["profile"])
    steps = profiled.pop("steps")
    profile_case = TimingCase("dds_profile", {**dds["method"], "steps": steps}, **profiled)
    report = device_check(
        out=out, device=cfg.device, sections=spec["sections"], tests=tests,
        tasks=_task_cases(spec["tasks"], data_root) if "tasks" in spec["sections"] else (), batch=batch,
        dds={"problem": dds_problem, "prior": dds_prior, "cases": _timing(dds, "dds")},
        profile={"problem": dds_problem, "prior": dds_prior, "case": profile_case},
        volume={"problem": functools.partial(ct3d, size=volume["size"], depth=volume["depth"], views=volume["views"],
                                             image="phantom", data_root=data_root),
                "prior": functools.partial(random_adm, volume["adm"], overrides=volume["adm_overrides"]),
                "cases": _timing(volume, "volume")},
        budget_s=spec["budget_s"], cwd=ROOT,
    )
    print(report)


if __name__ == "__main__":
    main()
