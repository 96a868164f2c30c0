"""Shared plotting for ``scripts/bench_*.py``: the parts every benchmark's PNGs repeat.

matplotlib is the optional ``bench`` extra, so the benchmarks must run without it: ``pyplot()``
is the one place that imports it (headless, the Agg backend: no display on the machines these
run on) and prints the single line that says the plots were skipped. The rest are the pieces
that were copied from script to script: an empirical CDF and its axes, an annotated bar panel,
plain tick labels on log axes, the machine note of a title and saving a figure at the
resolution the docs embed (``docs/img/bench/``, see docs/benchmarks.md).

Nothing here measures anything; a benchmark's numbers never depend on whether it plotted.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Small enough to embed in docs/benchmarks.md (a 14 x 4.2 in figure is 1,400 px wide and
# ~100 KB), large enough to read the tick labels.
DPI = 100
SKIP_LINE = "plots skipped: matplotlib is not installed (.venv/bin/pip install -e '.[bench]')"


def pyplot() -> Any | None:
    """matplotlib.pyplot on the Agg backend, or None after printing one skip line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(SKIP_LINE)
        return None
    return plt


def machine() -> str:
    """The note every title carries: absolute times only mean something next to the machine
    (2 shared cores here); comparisons inside one figure are of the same run."""
    return f"{os.cpu_count()} cores, same run"


def cdf(
    ax: Any, xs: Sequence[float], label: str, missing: int = 0, unit: str = "", **kw: Any
) -> None:
    """Empirical CDF of ``xs``. ``missing`` samples that never arrived (an observer that never
    saw the event) count in the denominator, so the curve stays below 1 instead of hiding
    them. The legend gets the sample count and the median, the figure a reader looks for."""
    xs = sorted(xs)
    if not xs:
        return
    total = len(xs) + missing
    median = statistics.median(xs + [math.inf] * missing)
    text = f"{label}: p50 {median:.3g}{' ' + unit if unit else ''}, n={total}"
    text += f" ({missing} never)" if missing else ""
    ax.step(xs, [(i + 1) / total for i in range(len(xs))], where="post", label=text, **kw)


def cdf_axes(ax: Any, xlabel: str, title: str, log: bool = False, ylabel: str = "") -> None:
    """Labels, grid and legend of a CDF panel (``log``: log x axis, plain tick labels)."""
    if log:
        ax.set_xscale("log")
        plain_log(ax, "x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or "fraction of samples <= x")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plain_log(ax: Any, axis: str = "y") -> None:
    """Tick labels such as 200 and 1,000 on a log axis instead of 2x10^2 and 10^3, with the 2s
    and 5s between decades labelled; an axis narrower than a decade (decided from the data
    already plotted) gets evenly spaced plain ticks instead, or it would show one label."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    def label(v: float, _pos: Any = None) -> str:
        return f"{v:,.0f}" if v >= 10 else f"{v:g}"

    target = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    target.set_major_formatter(FuncFormatter(label))
    if lo > 0 and hi / lo < 10:
        target.set_major_locator(MaxNLocator(nbins=6))
        target.set_minor_formatter(NullFormatter())
        return
    target.set_minor_locator(LogLocator(subs=(2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)))
    target.set_minor_formatter(
        FuncFormatter(lambda v, _p=None: label(v) if f"{v:e}"[0] in "25" else "")
    )


def bars(
    ax: Any,
    labels: Sequence[str],
    values: Sequence[float | None],
    colors: Sequence[str],
    title: str,
    fmt: Callable[[float], str] | None = None,
    ylabel: str = "",
) -> None:
    """One bar per label, its value written above it; a None value leaves its bar out (the
    target was not measured in this run)."""
    keep = [i for i, v in enumerate(values) if v is not None]
    ax.bar([labels[i] for i in keep], [values[i] for i in keep], color=[colors[i] for i in keep])
    for i in keep:
        v = float(values[i])  # type: ignore[arg-type]
        text = fmt(v) if fmt else (f"{v:.2f}" if abs(v) < 10 else f"{v:,.0f}")
        ax.annotate(text, (labels[i], v), ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.margins(y=0.12)
    ax.grid(True, axis="y", alpha=0.3)


def grouped_bars(
    ax: Any,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    colors: Sequence[str | None] | None = None,
    fmt: Callable[[float], str] | None = None,
) -> None:
    """Side-by-side bars, one cluster per group and one bar per series (e.g. DIRECT and
    OVERLAY per metric), each value written above its bar and a legend of the series."""
    width = 0.8 / max(len(series), 1)
    for j, (name, vals) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        color = colors[j] if colors else None
        ax.bar(xs, vals, width, label=name, color=color)
        for x, v in zip(xs, vals, strict=True):
            text = fmt(v) if fmt else (f"{v:.2f}" if abs(v) < 10 else f"{v:,.0f}")
            ax.annotate(text, (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(range(len(groups))), list(groups))
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def save(plt: Any, fig: Any, path: Path | str, dpi: int = DPI) -> str:
    """Lay out, write and close ``fig``; returns the path written (as str, for printing)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)
