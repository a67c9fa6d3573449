"""Reports of a batch run folder (:mod:`invdiff.batch.engine`): a markdown table and three figures.

``python scripts/report.py <run folder>`` writes into the folder

* ``report.md``: per setting and method, NFE, PSNR, SSIM and NMSE (mean ± std over volumes) and
  seconds per slice;
* ``psnr_vs_nfe.png``: PSNR against network evaluations per setting (baselines, at no NFE, as
  horizontal lines);
* ``seconds.png``: seconds per slice per method and setting (log scale);
* ``examples.png``: one slice (the middle slice of the first volume) per setting and method,
  beside the reference, with its PSNR;
* ``acquisitions.png`` (runs with an active method, e.g. ``sampler: ads`` under ``ads4x``): per
  setting and active method the mean acquired mask over the slices and every slice's acquisition
  order (read from ``acquisitions/<setting>/<method>/<volume>/<slice>.json``).

``python scripts/report.py <run folder> --beside <other run folder>`` also prints the two runs'
PSNR and SSIM side by side per setting and method (:func:`side_by_side`), e.g. a run without
oracle information beside the oracle's upper bound.

``python scripts/report.py --compare <run folder> [<run folder> ...] --out <folder>`` writes one
table over several runs in the manner of InverseBench (:func:`compare_runs`): a row per method,
PSNR and SSIM per run and setting, NFE, seconds per slice and the mean PSNR rank, with
``quality_vs_nfe.png`` beside it.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from invdiff.batch.engine import markdown_summary, merge, slice_path, target_path
from invdiff.fileio import atomic_write, atomic_write_text


def load_summary(run_dir: Path) -> dict:
    """The run's ``summary.json``, rebuilt from its rows first (so a report after a crash is current)."""
    run_dir = Path(run_dir)
    if not (run_dir / "rows").is_dir():
        raise FileNotFoundError(f"run folder: {run_dir} has no rows/ folder; expected the out_dir of a batch benchmark")
    existing = run_dir / "summary.json"
    order = json.loads(existing.read_text())["methods"] if existing.is_file() else []
    settings = list(dict.fromkeys(e["setting"] for e in order))
    methods = list(dict.fromkeys(e["method"] for e in order))
    return merge(run_dir, settings=settings, methods=methods)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_psnr_vs_nfe(summary: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(e["setting"] for e in summary["methods"]))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        entries = [e for e in summary["methods"] if e["setting"] == setting and math.isfinite(e["psnr"])]
        for k, e in enumerate(entries):
            colour = f"C{k % 10}"
            if e["nfe"] > 0:
                ax.errorbar([e["nfe"]], [e["psnr"]], yerr=[e["psnr_std"]], fmt="o", color=colour, label=e["method"])
            else:
                ax.axhline(e["psnr"], ls="--", color=colour, label=e["method"])
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(setting)
        ax.grid(alpha=0.3)
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def plot_seconds(summary: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(e["setting"] for e in summary["methods"]))
    methods = list(dict.fromkeys(e["method"] for e in summary["methods"]))
    seconds = {(e["setting"], e["method"]): e["seconds_per_slice"] for e in summary["methods"]}
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(methods) * max(1, len(settings) / 2) + 1))
    height = 0.8 / len(settings)
    for s, setting in enumerate(settings):
        values = [seconds.get((setting, m), np.nan) for m in methods]
        ax.barh(np.arange(len(methods)) + s * height, values, height=height, label=setting)
    ax.set_yticks(np.arange(len(methods)) + 0.4 - height / 2)
    ax.set_yticklabels(methods)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per slice")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def plot_examples(run_dir: Path, summary: dict) -> bytes | None:
    """The middle slice of the first volume per setting and method; ``None`` when nothing is saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = summary.get("volumes") or {}
    if not volumes:
        return None
    volume = sorted(volumes)[0]
    indices = volumes[volume]
    if not indices:
        return None
    index = indices[len(indices) // 2]
    reference_path = target_path(run_dir, volume, index)
    if not reference_path.is_file():
        return None
    reference = np.load(reference_path)
    settings = list(dict.fromkeys(e["setting"] for e in summary["methods"]))
    methods = list(dict.fromkeys(e["method"] for e in summary["methods"]))
    vmax = float(reference.max())
    fig, axes = plt.subplots(len(settings), len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 2.0 * len(settings)),
                             squeeze=False)
    for r, setting in enumerate(settings):
        axes[r][0].imshow(reference, cmap="gray", vmin=0, vmax=vmax)
        axes[r][0].set_title("reference" if r == 0 else "", fontsize=8)
        axes[r][0].set_ylabel(setting, fontsize=8)
        for c, method in enumerate(methods, start=1):
            path = slice_path(run_dir, setting, method, volume, index)
            ax = axes[r][c]
            if path.is_file():
                image = np.load(path)
                mse = float(np.mean((image - reference) ** 2))
                psnr = 10 * math.log10(vmax**2 / mse) if mse > 0 else math.inf
                ax.imshow(image, cmap="gray", vmin=0, vmax=vmax)
                ax.set_title(f"{method}\n{psnr:.1f} dB", fontsize=7)
            else:
                ax.set_title(f"{method}\n(missing)", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{volume}, slice {index}", fontsize=9)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def read_acquisitions(run_dir: Path) -> dict[tuple[str, str], dict]:
    """The active methods' acquisitions per ``(setting, method)``: ``grid``, ``unit`` and per slice
    (``"volume/slice"``) the ``order`` of the units (the start first) and the step of each."""
    found: dict[tuple[str, str], dict] = {}
    for path in sorted(Path(run_dir).glob("acquisitions/*/*/*/*.json")):
        setting, method, volume = path.parts[-4], path.parts[-3], path.parts[-2]
        record = json.loads(path.read_text())
        entry = found.setdefault((setting, method), {"grid": record["grid"], "unit": record["unit"], "slices": {}})
        entry["slices"][f"{volume}/{path.stem}"] = record
    return found


def acquired_masks(entry: dict) -> np.ndarray:
    """``(slices, units)``: each slice's acquisition rank of every unit (0 for the start set, then
    1, 2, ... in the order chosen; ``nan`` where not acquired)."""
    units = int(np.prod(entry["grid"]))
    ranks = np.full((len(entry["slices"]), units), np.nan)
    for row, record in enumerate(entry["slices"].values()):
        steps = np.asarray(record["acquired_at"])
        start = int((steps < 0).sum())
        ranks[row, record["order"]] = np.concatenate([np.zeros(start), np.arange(1, len(steps) - start + 1)])
    return ranks


SHADES = " ░▒▓█"
"""Text shades of a mean mask, from never acquired to acquired on every slice."""


def mask_strips(found: dict[tuple[str, str], dict]) -> str:
    """The mean acquired masks of 1-D units (lines, views) of :func:`read_acquisitions`'s ``found``
    as text, a row per ``(setting, method)``: one character per unit, from blank (never acquired)
    to a full block (on every slice)."""
    rows = []
    for (setting, method), entry in found.items():
        if len(entry["grid"]) != 1:
            continue
        mean = (~np.isnan(acquired_masks(entry))).mean(0)
        shades = "".join(SHADES[int(round(v * (len(SHADES) - 1)))] for v in mean)
        rows.append(f"{setting:>10} {method:<14} |{shades}|")
    return "\n".join(rows)


def plot_acquisitions(found: dict[tuple[str, str], dict]) -> bytes | None:
    """Per ``(setting, method)`` of an active method: the mean acquired mask over the slices (for
    lines and views, the fraction of slices that acquired each unit, drawn as a line mask) above
    every slice's acquisition order (a fixed setting's mask, all held from the start, beside the
    active ones), from :func:`read_acquisitions`'s ``found``; ``None`` when it is empty."""
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(found), figsize=(3.2 * len(found), 5.0), squeeze=False)
    for c, ((setting, method), entry) in enumerate(found.items()):
        ranks = acquired_masks(entry)
        mean = (~np.isnan(ranks)).mean(0)
        grid = entry["grid"]
        top, bottom = axes[0][c], axes[1][c]
        picture = np.tile(mean, (max(grid[0] // 2, 8), 1)) if len(grid) == 1 else mean.reshape(grid)
        top.imshow(picture, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        top.set_title(f"{setting} / {method}\nmean {entry['unit']} mask, {len(ranks)} slices", fontsize=8)
        top.set_yticks([])
        image = bottom.imshow(ranks, cmap="viridis", aspect="auto", interpolation="nearest")
        bottom.set_xlabel(f"{entry['unit']} (index)", fontsize=8)
        bottom.set_ylabel("slice", fontsize=8)
        bottom.set_yticks(range(len(ranks)))
        bottom.set_yticklabels(list(entry["slices"]), fontsize=5)
        bottom.set_title("acquisition order (0: start)", fontsize=8)
        fig.colorbar(image, ax=bottom, fraction=0.05)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def write_report(run_dir: Path) -> str:
    """Write ``report.md`` and the figures into ``run_dir``; return the markdown."""
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    if not summary["methods"]:
        raise ValueError(f"run folder: {run_dir} holds no finished slices yet")
    text = markdown_summary(summary)
    acquisitions = read_acquisitions(run_dir)
    figures = {"psnr_vs_nfe.png": plot_psnr_vs_nfe(summary), "seconds.png": plot_seconds(summary),
               "examples.png": plot_examples(run_dir, summary), "acquisitions.png": plot_acquisitions(acquisitions)}
    for name, data in figures.items():
        if data is not None:
            atomic_write(run_dir / name, lambda tmp, data=data: tmp.write_bytes(data))
    links = " ".join(f"![{name}]({name})" for name, data in figures.items() if data is not None)
    strips = mask_strips(acquisitions)
    if strips:
        text += "\n\nMean acquired masks (one character per unit, blank: never, full block: every slice):\n\n```\n" \
            + strips + "\n```"
    atomic_write_text(run_dir / "report.md", text + "\n\n" + links + "\n")
    return text


def side_by_side(run_dir: Path, other_dir: Path, labels: tuple[str, str] | None = None) -> str:
    """A markdown table of two runs' PSNR and SSIM per setting and method (those both have), and the
    difference in PSNR (first minus second)."""
    first, second = load_summary(run_dir), load_summary(other_dir)
    labels = labels or (Path(run_dir).name, Path(other_dir).name)
    other = {(e["setting"], e["method"]): e for e in second["methods"]}
    lines = [
        f"| setting | method | NFE | PSNR {labels[0]} | PSNR {labels[1]} | difference | SSIM {labels[0]} | "
        f"SSIM {labels[1]} | slices |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in first["methods"]:
        o = other.get((e["setting"], e["method"]))
        if o is None:
            continue
        lines.append(
            f"| {e['setting']} | {e['method']} | {e['nfe']} | {e['psnr']:.2f} | {o['psnr']:.2f} | "
            f"{e['psnr'] - o['psnr']:+.2f} | {e['ssim']:.3f} | {o['ssim']:.3f} | {e['slices']} |"
        )
    notes = [f"- {labels[i]}: {note}" for i, summary in enumerate((first, second)) for note in summary.get("notes", [])]
    return "\n".join(lines + ([""] + notes if notes else []))



def _ranks(values: dict[str, float]) -> dict[str, float]:
    """Rank 1 for the largest value, ties sharing their mean rank; NaN ranks last."""
    order = sorted(values, key=lambda k: -values[k] if math.isfinite(values[k]) else math.inf)
    ranks: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def plot_quality_vs_nfe(columns: list[tuple[str, dict]]) -> bytes:
    """PSNR against network evaluations, one panel per (run, setting); baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(m for _, entries in columns for m in entries))
    colours = {m: f"C{k % 10}" for k, m in enumerate(methods)}
    markers = {m: "os^vDP*Xhp<>"[k // 10 % 12] for k, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(columns), figsize=(4.0 * len(columns), 3.6), squeeze=False)
    for ax, (title, entries) in zip(axes[0], columns):
        for method, e in entries.items():
            if not math.isfinite(e["psnr"]):
                continue
            if e["nfe"] > 0:
                ax.plot([e["nfe"]], [e["psnr"]], markers[method], color=colours[method], label=method)
            else:
                ax.axhline(e["psnr"], ls="--", lw=1, color=colours[method], label=method)
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per slice")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def compare_runs(run_dirs: list[Path | str], out_dir: Path) -> str:
    """One table over several batch runs, InverseBench's layout: a row per method, PSNR / SSIM per
    (run, setting), the method's NFE and mean seconds per slice, and its mean PSNR rank over the
    columns where it ran; a cell over fewer slices than its column's most says so, ``(n/m)``. Writes ``compare.md`` and ``quality_vs_nfe.png`` into ``out_dir``.

    Args:
        run_dirs: the batch runs' folders (each the ``out_dir`` of a benchmark), e.g. an MRI and a
            CT run, each optionally as ``"label=folder"``: runs with the same label are one
            benchmark split over folders (methods run apart on the same slices), and their
            settings merge into the same columns; a method measured twice in a column is an error.
        out_dir: where the table and the figure go (created).

    Returns:
        the markdown table.
    """
    merged: dict[tuple[str, str], dict] = {}
    for spec in run_dirs:
        label, _, folder = str(spec).rpartition("=")
        run_dir = Path(folder)
        label = label or run_dir.name
        summary = load_summary(run_dir)
        for e in summary["methods"]:
            column = merged.setdefault((label, e["setting"]), {})
            if e["method"] in column:
                raise ValueError(f"run folders: {e['method']!r} of setting {e['setting']!r} is in more than one "
                                 f"folder labelled {label!r}; keep one")
            column[e["method"]] = e
    columns = [(f"{label}: {setting}", entries) for (label, setting), entries in merged.items()]
    if not columns:
        raise ValueError(f"run folders: {[str(r) for r in run_dirs]} hold no finished slices yet")
    methods = list(dict.fromkeys(m for _, entries in columns for m in entries))
    ranks = [_ranks({m: e["psnr"] for m, e in entries.items()}) for _, entries in columns]
    most_slices = [max(e["slices"] for e in entries.values()) for _, entries in columns]
    partial = False
    header = "| method | NFE | " + " | ".join(f"{t} PSNR / SSIM" for t, _ in columns) + " | s / slice | mean rank |"
    lines = [header, "|---|---:|" + "---:|" * len(columns) + "---:|---:|"]
    rows = []
    for method in methods:
        cells, seconds, nfes, method_ranks = [], [], set(), []
        for (_, entries), column_ranks, slices in zip(columns, ranks, most_slices):
            e = entries.get(method)
            if e is None:
                cells.append("–")
                continue
            mark = f" ({e['slices']}/{slices})" if e["slices"] < slices else ""
            partial = partial or bool(mark)
            cells.append(f"{e['psnr']:.2f} / {e['ssim']:.3f}{mark}")
            seconds.append(e["seconds_per_slice"])
            nfes.add(int(e["nfe"]))
            method_ranks.append(column_ranks[method])
        mean_rank = sum(method_ranks) / len(method_ranks)
        nfe = "/".join(str(n) for n in sorted(nfes))
        rows.append((mean_rank, f"| {method} | {nfe} | " + " | ".join(cells)
                     + f" | {sum(seconds) / len(seconds):.2f} | {mean_rank:.1f} |"))
    lines += [row for _, row in sorted(rows, key=lambda r: r[0])]
    if partial:
        lines += ["", "(n/m): over n of the m slices that the column's other methods finished (a partial run)."]
    text = "\n".join(lines)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_quality_vs_nfe(columns)
    atomic_write(out_dir / "quality_vs_nfe.png", lambda tmp: tmp.write_bytes(figure))
    atomic_write_text(out_dir / "compare.md", text + "\n\n![quality_vs_nfe.png](quality_vs_nfe.png)\n")
    return text
