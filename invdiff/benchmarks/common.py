"""Measurement helpers shared by the benchmarks: timing, peak memory, isolated runs, tables."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable, Sequence
from typing import Any


def median_ms(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


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


def run_isolated(fn: Callable[..., dict], **kwargs) -> dict:
    """Run ``fn(**kwargs)`` in a fresh interpreter so memory and thread settings don't leak."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, **kwargs).result()


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
