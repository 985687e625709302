"""matplotlib charts for the run report, each returned as PNG bytes.

The functions take plain numbers (the report's sections read them from the run) and draw
with matplotlib's object API (``Figure`` + the Agg canvas: no pyplot state, no display).
PNGs carry no timestamp or version metadata, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

WIDTH = 8.0  # inches at DPI below: about 800 px, the report's column width
DPI = 100
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f77b4", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8"]
KEPT = "#59a14f"
REJECTED = "#e15759"


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def figure(height: float = 3.6, width: float = WIDTH) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _short(label: str, n: int = 38) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def funnel(stages: Sequence[str], kept: Sequence[float], rejected: Sequence[float], title: str,
           ylabel: str) -> bytes:
    """Stacked bars per stage: kept at the bottom, rejected on top (together: the stage's input)."""
    fig = figure()
    ax = fig.add_subplot()
    x = np.arange(len(stages))
    ax.bar(x, kept, color=KEPT, label="kept")
    ax.bar(x, rejected, bottom=kept, color=REJECTED, label="rejected")
    top = max([k + r for k, r in zip(kept, rejected)] or [1])
    for i, (k, r) in enumerate(zip(kept, rejected)):
        ax.annotate(_fmt(k), (i, k), ha="center", va="top", fontsize=8, xytext=(0, -2), textcoords="offset points",
                    color="white")
        if r:
            ax.annotate(f"−{_fmt(r)}", (i, k + r), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points", color=REJECTED)
    ax.set_xticks(x, stages)
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return to_png(fig)


def hbars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str,
          colors: Sequence[str] | None = None, legend: dict[str, str] | None = None) -> bytes:
    """Horizontal bars, first label on top; ``legend`` maps a colour's name to the colour."""
    fig = figure(height=max(2.2, 0.32 * len(labels) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    ax.barh(y, values, color=colors or PALETTE[0])
    ax.set_yticks(y, [_short(label) for label in labels], fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.annotate(_fmt(v), (v, i), va="center", fontsize=7, xytext=(3, 0), textcoords="offset points")
    ax.set_xlim(0, max(list(values) or [1]) * 1.15)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if legend:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=c, label=n) for n, c in legend.items()], fontsize=8, loc="lower right")
    return to_png(fig)


def vbars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, ylabel: str,
          log: bool = False) -> bytes:
    fig = figure(height=3.2)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    ax.bar(x, values, color=PALETTE[0])
    for i, v in enumerate(values):
        ax.annotate(_fmt(v), (i, v), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, labels, fontsize=8, rotation=30 if len(labels) > 8 else 0)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, max(list(values) or [1]) * 1.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return to_png(fig)


def grouped(categories: Sequence[str], series: dict[str, Sequence[float]], title: str, ylabel: str,
            xlabel: str = "", markers: dict[str, Sequence[float]] | None = None, fmt: str = "{:.2f}") -> bytes:
    """Side-by-side bars per category, one colour per series; ``markers`` are drawn as ticks."""
    fig = figure(height=3.4)
    ax = fig.add_subplot()
    x = np.arange(len(categories))
    w = 0.8 / max(1, len(series))
    for j, (name, vals) in enumerate(series.items()):
        pos = x - 0.4 + w * (j + 0.5)
        ax.bar(pos, vals, w, label=name, color=color(j))
        if len(categories) * len(series) <= 24:
            for p, v in zip(pos, vals):
                ax.annotate(fmt.format(v), (p, v), ha="center", va="bottom", fontsize=7, xytext=(0, 1),
                            textcoords="offset points")
    for j, (name, vals) in enumerate((markers or {}).items()):
        ax.scatter(x, vals, marker="_", s=400, color="black", label=name, zorder=3)
    ax.set_xticks(x, categories, fontsize=8, rotation=30 if len(categories) > 8 else 0)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return to_png(fig)


def heatmap(rows: Sequence[str], cols: Sequence[str], matrix: np.ndarray, title: str, xlabel: str,
            ylabel: str, unit: str) -> bytes:
    """Counts as a grid of cells (darker = more), each annotated with its count."""
    fig = figure(height=max(2.4, 0.45 * len(rows) + 1.4))
    ax = fig.add_subplot()
    img = ax.imshow(np.log1p(matrix), cmap="Reds", aspect="auto")
    ax.set_xticks(np.arange(len(cols)), [_short(c, 14) for c in cols], fontsize=8,
                  rotation=35 if len(cols) > 6 else 0, ha="right" if len(cols) > 6 else "center")
    ax.set_yticks(np.arange(len(rows)), rows, fontsize=8)
    hi = np.log1p(matrix).max() or 1
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = matrix[i, j]
            if v:
                ax.text(j, i, _fmt(v), ha="center", va="center", fontsize=7,
                        color="white" if np.log1p(v) > 0.6 * hi else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    bar = fig.colorbar(img, ax=ax, shrink=0.8)
    ticks = [t for t in (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000) if t <= max(1, matrix.max())]
    bar.set_ticks(np.log1p(ticks), labels=[_fmt(t) for t in ticks])
    bar.set_label(unit, fontsize=8)
    return to_png(fig)


def histograms(panels: Sequence[tuple], title: str, xlabel: str, log_x: bool = True, ylabel: str = "documents",
               extra_label: str = "") -> bytes:
    """One histogram per panel ``(label, values, cut-offs[, extra values])``, cut-offs as dashed
    lines; extra values (e.g. documents left out of the cut-offs) are stacked in grey."""
    n = max(1, len(panels))
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = figure(height=2.4 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    legend_done = False
    for k, panel in enumerate(panels):
        label, values, cuts = panel[:3]
        extra = _finite(panel[3] if len(panel) > 3 else [], log_x)
        values = _finite(values, log_x)
        ax = axes[k // ncols][k % ncols]
        both = np.concatenate([values, extra])
        if both.size:
            lo, hi = both.min(), both.max()
            if log_x and hi > 10 * lo:
                bins = np.geomspace(lo, hi, 30)
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(_tick))
                if math.log10(hi / lo) <= 2:  # few decades: label the 2s and 5s between the powers of ten
                    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: _tick(v) if f"{v:g}"[0] in "25" else ""))
                else:
                    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            else:
                bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
            data, colors, names = [values], [color(k)], ["counted"]
            if extra.size:
                data.append(extra)
                colors.append("#bbbbbb")
                names.append(extra_label or "other")
            ax.hist(data, bins=bins, color=colors, stacked=True, label=names)
            if extra.size and not legend_done:
                ax.legend(fontsize=7, loc="upper left")
                legend_done = True
        for j, c in enumerate(cuts):
            ax.axvline(c, color="black", linestyle="--", linewidth=1)
            ax.annotate(f"{c:,.0f}" if abs(c) >= 100 else f"{c:.3g}", (c, 1 - 0.09 * j),
                        xycoords=("data", "axes fraction"), fontsize=7, ha="left", va="top", xytext=(2, -2),
                        textcoords="offset points")
        ax.set_title(f"{label} ({both.size:,})", fontsize=9)
        ax.tick_params(which="both", labelsize=7)
        ax.set_xlabel(xlabel, fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel(ylabel, fontsize=8)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.suptitle(title)
    return to_png(fig)


def _tick(v: float, _pos=None) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _finite(values, positive: bool) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v) & (v > 0)] if positive else v[np.isfinite(v)]


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str,
          ylabel: str, log_y: bool = False) -> bytes:
    fig = figure(height=3.4)
    ax = fig.add_subplot()
    for j, (name, (x, y)) in enumerate(series.items()):
        ax.plot(x, y, label=name, color=color(j), linewidth=1.4, marker="o" if len(x) <= 12 else None,
                markersize=3)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return to_png(fig)


def line_panels(panels: Sequence[tuple[str, dict[str, tuple[Sequence[float], Sequence[float]]], float | None]],
                title: str, xlabel: str, ylabel: str) -> bytes:
    """Side-by-side line charts ``(panel title, series, reference level or None)``; the reference
    level is a dashed grey line."""
    fig = figure(height=3.4)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (name, series, ref) in zip(axes, panels):
        for j, (label, (x, y)) in enumerate(series.items()):
            ax.plot(x, y, label=label, color=color(j), linewidth=1.4, marker="o", markersize=3)
        if ref is not None:
            ax.axhline(ref, color="#888888", linestyle="--", linewidth=1, label="before")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return to_png(fig)


def _fmt(v: float) -> str:
    if isinstance(v, (int, np.integer)) or float(v).is_integer():
        v = int(v)
        if abs(v) >= 1_000_000:
            return f"{v / 1e6:.1f}M"
        if abs(v) >= 10_000:
            return f"{v / 1e3:.0f}k"
        return f"{v:,}"
    return f"{v:.3g}"
