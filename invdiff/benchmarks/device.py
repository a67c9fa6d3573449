r"""One prepared run on a GPU: tests, every task and sampler, a batch run, and full-size timings.

:func:`device_check` runs sections in order and writes ``device_check.json`` and
``device_check.md`` into its folder after every case, so a run stopped by a time limit leaves
everything it measured:

- ``tests``: the tests marked ``gpu`` (a pytest command), their counts and failures;
- ``tasks``: every task with every sampler at a few steps on the device (:class:`SamplerCase`):
  *ok* when the output is finite and every tensor the sampler reports at each step (``x``,
  ``x0_hat``, ...) is on the device, *refused* when the method refuses the task with a
  ``ValueError`` before any network evaluation (a 2D task for a volume sampler, a nonlinear task
  for DDS), *error* otherwise;
- ``batch``: a batch benchmark command (under ``torchrun``), its exit status and summary;
- ``dds``: DDS on full-size multi-coil MRI (:class:`TimingCase`) with an ADM network of DDS's
  fastMRI architecture and random weights: seconds per slice and per network evaluation, peak
  memory, and the network's achieved throughput against the device's peak;
- ``profile``: a few DDS steps at full size under ``torch.profiler``: the operations that take
  the device's time, and the host synchronisations per step (``aten::_local_scalar_dense``, the
  read-back of a device value, and the CUDA runtime's synchronising calls); the Chrome trace is
  written as ``profile_trace.json``;
- ``volume``: a volume sampler (DDS-3D, DiffusionMBIR) on a CT volume with the ADM-256
  architecture, seconds and peak memory.

With random weights the images are meaningless; the time and memory are those of the real
networks, since a forward pass costs the same whatever the weights. Compiled cases are timed on a
second run, after a warm-up run of the same shapes that pays for compilation (reported apart).

Peak throughput: the network's floating-point operations per evaluation are counted once by
``torch.utils.flop_counter`` on fake tensors (no memory, no time); *network TFLOP/s* is that
count times the evaluations over the whole method's time (CG and FFTs included), and *of peak*
divides it by the device's dense peak for the precision (:data:`PEAK_TFLOPS`).
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from invdiff.benchmarks.common import PeakMemory, markdown_table
from invdiff.fileio import atomic_write_text, json_safe
from invdiff.priors.base import Denoiser
from invdiff.problems.base import Problem

SECTIONS = ("tests", "tasks", "batch", "dds", "profile", "volume")
"""The sections of :func:`device_check`, in the order they run."""

PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "RTX 3090": {"bf16": 71.0, "fp16": 71.0, "fp32": 35.6},
}
"""Dense peak TFLOP/s by device name (the first key the name contains): tensor-core bf16/fp16
and plain fp32 (cuDNN convolutions may use TF32 in fp32, so fp32 can exceed its column)."""


def peak_tflops(device: torch.device) -> dict[str, float] | None:
    """The device's row of :data:`PEAK_TFLOPS`, or ``None`` (a CPU, an unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((row for key, row in PEAK_TFLOPS.items() if key in name), None)


def network_tflop(denoiser: Denoiser, shape: Sequence[int]) -> float:
    """TFLOP of one evaluation of ``denoiser`` on a batch of ``shape``, counted on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    device = next(denoiser.parameters()).device
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(*shape, device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            denoiser(x, 0.5)
    return counter.get_total_flops() / 1e12


class DeviceMemory:
    """Peak memory in MiB over a block: CUDA's allocator peak on a GPU, resident memory otherwise."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib: float | None = None

    def __enter__(self) -> DeviceMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._host = PeakMemory().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        else:
            self._host.__exit__(*exc)
            self.peak_mib = self._host.peak_mib


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class SamplerCase:
    """One task with one sampler: ``problem()`` and ``prior()`` build them (called once per case)."""

    task: str
    sampler: str
    problem: Callable[[], Problem]
    prior: Callable[[], Denoiser | None]
    method: Any  # invdiff.run.Method


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def sampler_row(case: SamplerCase, device: torch.device, precision: str = "fp32") -> dict:
    """Run one :class:`SamplerCase` on ``device``: outcome, NFE, seconds and what went wrong."""
    from invdiff.run import run_method

    row = {"task": case.task, "sampler": case.sampler, "outcome": "error", "nfe": None, "seconds": None,
           "note": ""}
    off_device: list[str] = []

    def check(state: dict) -> None:
        for key, value in state.items():
            for t in _tensors(value):
                if t.device.type != device.type and t.ndim > 0:
                    off_device.append(f"step {state.get('i')}: {key} on {t.device}")

    try:
        problem, prior = case.problem(), case.prior()
        x, info = run_method(case.method, problem, prior, generator=torch.Generator().manual_seed(0),
                             device=device, precision=precision, callback=check)
    except ValueError as err:
        row.update(outcome="refused", note=str(err).splitlines()[0][:160])
        return row
    except Exception as err:  # noqa: BLE001 - every other failure is this case's error row
        row.update(note=f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
        return row
    row.update(nfe=info["nfe"], seconds=info["seconds"])
    if not torch.isfinite(x).all():
        row["note"] = "output holds NaN or infinite values"
    elif off_device:
        row["note"] = "; ".join(off_device[:2])
    else:
        row["outcome"] = "ok"
    return row


@dataclass
class TimingCase:
    """One timed configuration of a sampler at full size.

    Attributes:
        name: the row's name.
        method: the sampler as a method entry (``{sampler, steps, schedule, params}``).
        precision: the network's precision, ``fp32``, ``bf16`` or ``fp16``.
        slice_batch: slices per run (the problem's batch), or for a volume sampler its
            ``slice_batch`` parameter.
        compile: ``torch.compile`` mode (``off``, ``default``, ``reduce-overhead``, ``max-autotune``).
    """

    name: str
    method: dict
    precision: str = "fp32"
    slice_batch: int = 1
    compile: str = "off"


def timing_row(case: TimingCase, problem: Problem, prior: Denoiser, device: torch.device, *,
               tflop: float, peak: dict[str, float] | None, slices: int, warmup_steps: int = 2) -> dict:
    """Time ``case`` on ``problem``: a warm-up run (compilation, cuDNN's algorithm search), then the
    timed run; seconds per slice and per evaluation, peak memory, achieved network TFLOP/s.

    ``slices`` is the number of slices the problem holds (the batch for 2D problems, the depth
    for a volume); ``tflop`` the network's TFLOP per evaluation of one slice.
    """
    from invdiff.run import Method, run_method

    method = Method.from_config(case.name, dict(case.method), where=f"cases.{case.name}")
    warm = Method.from_config(case.name, {**case.method, "steps": warmup_steps}, where=f"cases.{case.name}")
    kwargs = {"device": device, "precision": case.precision, "compile_mode": case.compile}
    start = time.perf_counter()
    run_method(warm, problem, prior, generator=torch.Generator().manual_seed(0), **kwargs)
    warmup = time.perf_counter() - start
    with DeviceMemory(device) as memory:
        x, info = run_method(method, problem, prior, generator=torch.Generator().manual_seed(0), **kwargs)
    seconds, nfe = info["seconds"], info["nfe"]
    achieved = nfe * slices * tflop / seconds
    row = {"case": case.name, "precision": case.precision, "slice_batch": case.slice_batch,
           "compile": case.compile, "nfe": nfe, "warmup_s": warmup, "seconds": seconds,
           "s_per_slice": seconds / slices,
           "ms_per_nfe_slice": 1e3 * seconds / (nfe * slices) if nfe else None,
           "peak_mib": memory.peak_mib, "tflops": achieved, "finite": bool(torch.isfinite(x).all())}
    if peak is not None:
        row["of_peak"] = achieved / peak["fp32" if case.precision == "fp32" else case.precision]
    return row


def _batched(problem: Problem, batch: int) -> Problem:
    """``batch`` copies of a one-slice problem (the same operator broadcast over the batch)."""
    return Problem(name=problem.name, op=problem.op, y=problem.y.expand(batch, *problem.y.shape[1:]).clone(),
                   noise_std=problem.noise_std, x_shape=(batch, *problem.x_shape[1:]),
                   is_complex=problem.is_complex, scale=problem.scale)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

TASK_COLUMNS = [("task", "task", "s"), ("sampler", "sampler", "s"), ("outcome", "outcome", "s"),
                ("nfe", "NFE", "d"), ("seconds", "s", ".2f"), ("note", "note", "s")]
TIMING_COLUMNS = [("case", "case", "s"), ("precision", "precision", "s"), ("slice_batch", "slice_batch", "d"),
                  ("compile", "compile", "s"), ("nfe", "NFE", "d"), ("warmup_s", "warm-up s", ".1f"),
                  ("s_per_slice", "s / slice", ".3f"), ("ms_per_nfe_slice", "ms / NFE / slice", ".1f"),
                  ("peak_mib", "peak MiB", ".0f"), ("tflops", "network TFLOP/s", ".1f"),
                  ("of_peak", "of peak", ".2f")]

PROFILE_COLUMNS = [("op", "operation", "s"), ("calls", "calls", "d"), ("self_ms", "self ms", ".1f"),
                   ("share", "share", ".2f")]


@dataclass
class DeviceReport:
    """What :func:`device_check` has measured so far; written after every case."""

    out: Path
    header: dict
    sections: dict[str, dict] = field(default_factory=dict)

    def section(self, name: str, **info) -> dict:
        self.sections[name] = {"rows": [], **info}
        return self.sections[name]

    def write(self) -> str:
        atomic_write_text(self.out / "device_check.json",
                          json.dumps(json_safe({"header": self.header, "sections": self.sections}), indent=2) + "\n",
                          mkdir=True)
        text = self.markdown()
        atomic_write_text(self.out / "device_check.md", text + "\n", mkdir=True)
        return text

    def markdown(self) -> str:
        h = self.header
        lines = [f"### Device check: {h['device_name']} ({h['device']}), {h['date']}", "",
                 f"torch {h['torch']}, CUDA {h['cuda']}, Python {h['python']}; cuDNN benchmark "
                 f"{h['cudnn_benchmark']}, TF32 in convolutions {h['cudnn_tf32']}, in matrix products "
                 f"{h['matmul_tf32']}.", ""]
        for name, sec in self.sections.items():
            lines += [f"#### {name}", ""]
            if sec.get("summary"):
                lines += [sec["summary"], ""]
            if name == "tasks" and sec["rows"]:
                lines += [markdown_table(sec["rows"], TASK_COLUMNS), ""]
            elif name in ("dds", "volume") and sec["rows"]:
                lines += [markdown_table(sec["rows"], TIMING_COLUMNS), ""]
            elif name == "profile" and sec["rows"]:
                lines += [markdown_table(sec["rows"], PROFILE_COLUMNS), ""]
            elif sec["rows"]:
                lines += ["```", *[str(r) for r in sec["rows"]], "```", ""]
            if sec.get("error"):
                lines += [f"Error: {sec['error']}", ""]
            if sec.get("skipped"):
                lines += [f"Not run ({sec['skipped']}).", ""]
        return "\n".join(lines).rstrip()


def run_command(args: Sequence[str], *, timeout_s: float, cwd: str | Path | None = None) -> dict:
    """Run a command; its exit status, seconds and the last lines of its output."""
    start = time.perf_counter()
    try:
        done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:  # its output may be bytes even with text=True
        partial = err.stdout or ""
        rc, output = "timeout", partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    return {"rc": rc, "seconds": time.perf_counter() - start, "tail": output.strip().splitlines()[-15:]}


def device_check(
    *,
    out: str | Path,
    device: str | torch.device,
    sections: Sequence[str] = SECTIONS,
    tests: Sequence[str] | None = None,
    tasks: Sequence[SamplerCase] = (),
    batch: Sequence[str] | None = None,
    dds: dict | None = None,
    volume: dict | None = None,
    profile: dict | None = None,
    budget_s: float = 480.0,
    cwd: str | Path | None = None,
) -> str:
    """Run the sections in :data:`SECTIONS` order; return the markdown report (also written).

    Args:
        out: the folder for ``device_check.json`` and ``device_check.md``.
        device: where to run (``"cuda"``, ``"cpu"``).
        sections: which sections to run.
        tests: the command of the ``tests`` section (e.g. ``python -m pytest -m gpu``).
        tasks: the cases of the ``tasks`` section.
        batch: the command of the ``batch`` section.
        dds: the ``dds`` section: ``problem`` (a one-slice :class:`Problem` factory), ``prior``
            (a denoiser factory) and ``cases`` (:class:`TimingCase` list).
        volume: the ``volume`` section: ``problem`` (a volume problem factory), ``prior`` and
            ``cases``.
        profile: the ``profile`` section: ``problem``, ``prior`` and ``case`` (a :class:`TimingCase`).
        budget_s: seconds for the whole run; a section or case that would start after it is
            reported as not run.
        cwd: the working directory of the commands.

    Raises:
        ValueError: an unknown section name.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"sections: unknown {unknown}; expected names from {list(SECTIONS)}")
    from invdiff.run import resolve_device

    device = resolve_device(device)
    start = time.perf_counter()
    header = {"device": str(device), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
              or platform.machine(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version(), "budget_s": budget_s,
              "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
              "matmul_tf32": torch.backends.cuda.matmul.allow_tf32}
    report = DeviceReport(Path(out), header)

    def left() -> float:
        return budget_s - (time.perf_counter() - start)

    for name in (s for s in SECTIONS if s in sections):
        sec = report.section(name)
        if left() <= 0:
            sec["skipped"] = "time budget spent"
            report.write()
            continue
        if name in ("tests", "batch"):
            command = tests if name == "tests" else batch
            if not command:
                sec["skipped"] = "no command given"
            else:
                result = run_command(command, timeout_s=max(left(), 1.0), cwd=cwd)
                sec["rows"] = result["tail"]
                sec["summary"] = f"`{' '.join(command)}`: exit status {result['rc']} in {result['seconds']:.0f} s."
                sec["ok"] = result["rc"] == 0
        elif name == "tasks":
            for case in tasks:
                if left() <= 0:
                    sec["skipped"] = "time budget spent before the remaining cases"
                    break
                sec["rows"].append(sampler_row(case, device))
                report.write()
            counts = {k: sum(r["outcome"] == k for r in sec["rows"]) for k in ("ok", "refused", "error")}
            sec["summary"] = (f"{len(sec['rows'])} task × sampler pairs: {counts['ok']} ok, {counts['refused']} "
                              f"refused by the method, {counts['error']} errors.")
            sec["ok"] = counts["error"] == 0
        else:
            spec = {"dds": dds, "volume": volume, "profile": profile}[name]
            if not spec:
                sec["skipped"] = "no cases given"
            else:
                try:
                    if name == "profile":
                        _profile_section(sec, spec, device, Path(out))
                    else:
                        _timing_section(sec, spec, device, report, left, volume=name == "volume")
                except Exception as err:  # noqa: BLE001 - a section that cannot start is reported, the next runs
                    sec["error"] = f"{type(err).__name__}: {err}"
                    sec["ok"] = False
        report.write()
    return report.write()


def _timing_section(sec: dict, spec: dict, device: torch.device, report: DeviceReport,
                    left: Callable[[], float], *, volume: bool) -> None:
    """The ``dds`` or ``volume`` section: each :class:`TimingCase` on the problem, with the prior."""
    one = spec["problem"]()
    prior = spec["prior"]()
    slice_shape = (1, *one.x_shape[1:])
    tflop = network_tflop(prior, (1, *prior.shape[:1], *prior.input_size(slice_shape)))
    peak = peak_tflops(device)
    sec["summary"] = (f"unknown {tuple(one.x_shape)}, prior: {prior.source}; {tflop:.3f} TFLOP per evaluation "
                      f"of one slice" + (f"; device peak {peak}" if peak else ""))
    sec["tflop_per_nfe_slice"] = tflop
    problems: dict[int, Problem] = {}
    for case in spec["cases"]:
        if left() <= 0:
            sec["skipped"] = "time budget spent before the remaining cases"
            break
        if volume:
            problem, slices = one, one.x_shape[0]
            params = {**case.method.get("params", {}), "slice_batch": case.slice_batch}
            case = replace(case, method={**case.method, "params": params})
        else:
            problem = problems.setdefault(case.slice_batch, _batched(one, case.slice_batch))
            slices = case.slice_batch
        try:
            row = timing_row(case, problem, prior, device, tflop=tflop, peak=peak, slices=slices)
        except Exception as err:  # noqa: BLE001 - an out-of-memory case is a row, the next one runs
            row = {"case": case.name, "precision": case.precision, "slice_batch": case.slice_batch,
                   "compile": case.compile, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        sec["rows"].append(row)
        if case.compile != "off":
            torch._dynamo.reset()
        _free(device)
        report.write()
    best = [r for r in sec["rows"] if r.get("s_per_slice") is not None and math.isfinite(r["s_per_slice"])]
    if best:
        fastest = min(best, key=lambda r: r["s_per_slice"])
        sec["summary"] += (f". Fastest: {fastest['case']} ({fastest['precision']}, slice_batch "
                           f"{fastest['slice_batch']}, compile {fastest['compile']}) at {fastest['s_per_slice']:.3f} s "
                           f"per slice.")


SYNC_EVENTS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
"""Profiler events that stop the host until the device is done: reading a device value back, and
the CUDA runtime's synchronising calls."""


def _profile_section(sec: dict, spec: dict, device: torch.device, out: Path) -> None:
    """A few steps of ``spec["case"]`` under ``torch.profiler``, after a warm-up run."""
    from torch.profiler import ProfilerActivity, profile

    from invdiff.run import Method, run_method

    case: TimingCase = spec["case"]
    one = spec["problem"]()
    problem = _batched(one, case.slice_batch)
    prior = spec["prior"]()
    method = Method.from_config(case.name, dict(case.method), where=f"profile.{case.name}")
    kwargs = {"device": device, "precision": case.precision, "compile_mode": case.compile}
    run_method(method, problem, prior, generator=torch.Generator().manual_seed(0), **kwargs)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _, info = run_method(method, problem, prior, generator=torch.Generator().manual_seed(0), **kwargs)
    prof.export_chrome_trace(str(out / "profile_trace.json"))
    events = prof.key_averages()
    on_device = device.type == "cuda"

    def self_ms(e) -> float:
        us = getattr(e, "self_device_time_total", None) if on_device else e.self_cpu_time_total
        return (us if us is not None else getattr(e, "self_cuda_time_total", 0.0)) / 1e3

    steps = case.method["steps"]
    syncs = {e.key: e.count for e in events if e.key in SYNC_EVENTS}
    total = sum(self_ms(e) for e in events)
    top = sorted(events, key=self_ms, reverse=True)[:12]
    sec["rows"] = [{"op": e.key, "calls": e.count, "self_ms": self_ms(e), "share": self_ms(e) / total if total else None}
                   for e in top]
    sec["syncs"] = syncs
    sec["summary"] = (f"{case.name}: {steps} steps, {case.precision}, slice_batch {case.slice_batch}, compile "
                      f"{case.compile}, {info['seconds']:.2f} s under the profiler. Host synchronisations: "
                      + (", ".join(f"{k} {v} ({v / steps:.1f} per step)" for k, v in syncs.items()) or "none")
                      + f". Top operations by self {'device' if on_device else 'CPU'} time:")
    sec["ok"] = True
