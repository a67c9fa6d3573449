"""Measurement helpers shared by the benchmarks: timing, peak memory, isolated runs, tables."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def _times(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_ms(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup`` calls."""
    return 1e3 * statistics.median(_times(fn, repeats, warmup))


def best_ms(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Shortest wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup`` calls:
    the estimate least disturbed by other processes on a shared machine."""
    return 1e3 * min(_times(fn, repeats, warmup))


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


class PeakMemory:
    """Peak resident memory above the level at entry, in MiB (Linux: ``VmHWM`` reset on entry).

    Counts every allocation of the process (torch's CPU allocator, numpy, sigpy alike), so
    buffers built inside the block and transient work arrays are both included.
    """

    def __enter__(self) -> PeakMemory:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.start = _status_mib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mib = _status_mib("VmHWM") - self.start


# glibc hands freed heap memory back to the system once more than twice the largest recent
# allocation is free at the top of the heap; with buffers of tens of MB that threshold flips from
# call to call, and a call that finds its pages returned pays for faulting them in again (several
# ms per 28 MB buffer). Fixed thresholds make every method's timing stable; allocations larger
# than 32 MiB are still mapped and unmapped per call, as they would be in any program. Memory is
# measured without them, since a heap that never shrinks hides allocations in reused pages.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def run_isolated(fn: Callable[..., dict], *, env: dict[str, str] | None = None, **kwargs) -> dict:
    """Run ``fn(**kwargs)`` in a fresh interpreter with extra environment variables ``env``, so
    memory, thread settings and allocator state don't leak from one method to the next."""
    env = env or {}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(fn, **kwargs).result()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def check_run_entry(
    benchmark: str, group: str, entries: Mapping, name: str, registry: Mapping, registry_name: str, hint: str = ""
) -> dict:
    """The config entry ``name`` of ``benchmark.run``, after checking that ``group`` holds it and
    that the sampler it names (its ``sampler`` key, default ``name``) is in ``registry``.

    Args:
        benchmark: the benchmark's name in messages, e.g. ``"gmm"``.
        group: the config key holding the entries, e.g. ``"samplers"``.
        entries: that group's entries by name.
        name: the entry to check.
        registry: the samplers it may name; ``registry_name`` names it in messages.
        hint: appended to the message of an unregistered sampler.

    Raises:
        ValueError: naming the entry and what is configured or registered.
    """
    if name not in entries:
        raise ValueError(
            f"benchmark {benchmark}: run: {name!r} has no entry under {group} (configured: {', '.join(entries)})"
        )
    entry = entries[name]
    fn = entry.get("sampler", name)
    if fn not in registry:
        raise ValueError(
            f"benchmark {benchmark}: sampler {fn!r} (entry {name!r}) is not registered in {registry_name} "
            f"(registered: {', '.join(sorted(registry))}){hint}"
        )
    return entry


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A markdown table; ``columns`` holds ``(key, header, format)`` triples."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if f == "s" else "---:" for _, _, f in columns) + "|")
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("" if value is None else format(value, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
