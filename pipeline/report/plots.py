"""PNG figures for the report. Figures are built with matplotlib's object API on the Agg backend
(no pyplot state, no display), so reports render on headless machines and inside workers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; harmless when already set

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.report.aggregate import METRICS, Cell  # noqa: E402

STACK_NAMES = {"enc": "encoder", "dec": "decoder"}


def layerwise_plot(curves: pd.DataFrame, title: str, path: Path) -> Path:
    """UAR and F1 against layer index, one line per stack, shaded ± std (paper Fig. 3)."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, (metric, name) in zip(fig.subplots(1, 2), METRICS.items()):
        for stack, g in curves.groupby("stack", sort=False):
            x, y, s = g["layer"].to_numpy(), 100 * g[metric].to_numpy(), 100 * g[f"{metric}_std"].to_numpy()
            ax.plot(x, y, marker="o", label=STACK_NAMES.get(stack, stack))
            if np.isfinite(s).any():
                ax.fill_between(x, y - s, y + s, alpha=0.15)
        ax.set_xlabel("layer index (0 = embeddings)")
        ax.set_ylabel(f"{name} (%)")
        ax.set_xticks(sorted(curves["layer"].unique()))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Layer-wise performance: {title}")
    fig.savefig(path, dpi=110)
    return path


def snr_plot(table: dict[str, dict[float, Cell]], title: str, path: Path) -> Path:
    """UAR and F1 against SNR, one line per method (paper Table V as curves)."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    # colour = method, line style = stack: a method keeps its colour across stacks
    names = list(dict.fromkeys(m.split(" ", 1)[-1] for m in table))
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    styles = {"enc": "-", "dec": "--", "enc+dec": ":"}
    all_snrs: set[float] = set()
    for method, by_snr in table.items():
        stack, _, name = method.partition(" ")
        snrs = sorted(by_snr)
        all_snrs.update(snrs)
        for ax, attr in zip(axes, ("uar", "f1")):
            ax.plot(snrs, [100 * getattr(by_snr[s], attr).mean for s in snrs], marker="o", label=method,
                    color=colors.get(name, "k"), linestyle=styles.get(stack, "-."))
    for ax, name in zip(axes, METRICS.values()):
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel(f"{name} (%)")
        ax.set_xticks(sorted(all_snrs))
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    fig.suptitle(f"Robustness to noise: {title}")
    fig.savefig(path, dpi=110)
    return path


def _confusion_cells(ax, matrix: np.ndarray, classes: list[str], counts: bool, class_rows: bool = True):
    """One row-normalized confusion matrix on `ax` (% of each true class; `counts`: the counts in
    brackets); returns the image for a colour bar."""
    k = len(classes)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(100 * matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            text = f"{share[i, j]:.0f}%\n({int(matrix[i, j])})" if counts else f"{share[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if share[i, j] > 60 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes if class_rows else [])
    ax.set_xlabel("predicted")
    return im


def confusion_plot(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """Row-normalized confusion matrix (% of each true class), counts in brackets (paper Fig. 5)."""
    k = len(classes)
    fig = Figure(figsize=(1.1 * k + 2.2, 1.0 * k + 1.6), layout="constrained")
    ax = fig.subplots()
    im = _confusion_cells(ax, matrix, classes, counts=True)
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, label="% of true class")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=110)
    return path


LABEL_OFFSETS = ((3, 3), (3, -9), (-3, 3), (-3, -9))  # points: above right, below right, then to the left


def label_offsets(xy: list[tuple[float, float]], near: float = 0.05) -> list[tuple[int, int]]:
    """An offset (points) for each point's label: the first of LABEL_OFFSETS that no earlier point
    within `near` of the axes' span (in both x and y) already uses, so that conditions with almost
    the same WER and F1 (e.g. two noises at one SNR) do not print their names over each other."""
    pts = np.asarray(xy, dtype=float).reshape(-1, 2)
    span = np.where(np.ptp(pts, axis=0) > 0, np.ptp(pts, axis=0), 1.0) if len(pts) else np.ones(2)
    chosen: list[tuple[int, int]] = []
    for i, p in enumerate(pts):
        close = [chosen[j] for j in range(i) if (np.abs(pts[j] - p) <= near * span).all()]
        chosen.append(next((o for o in LABEL_OFFSETS if o not in close), LABEL_OFFSETS[i % len(LABEL_OFFSETS)]))
    return chosen


def wer_f1_plot(points: dict[str, list[tuple[float, float, str]]], metric: str, path: Path) -> Path:
    """Macro-F1 against the ASR error rate per condition, one marker series per method (paper Fig. 6)."""
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    every = [(100 * p[0], 100 * p[1]) for pts in points.values() for p in pts]
    offsets = iter(label_offsets(every))
    for method, pts in points.items():
        x, y = np.array([100 * p[0] for p in pts]), np.array([100 * p[1] for p in pts])
        dots = ax.scatter(x, y, label=method)
        for xi, yi, (_, _, where) in zip(x, y, pts):
            dx, dy = next(offsets)
            ax.annotate(where.rsplit("/", 1)[-1], (xi, yi), fontsize=6, alpha=0.7, xytext=(dx, dy),
                        textcoords="offset points", ha="left" if dx > 0 else "right")
        if len(pts) >= 3 and np.ptp(x) > 0:  # least-squares line, as the paper draws its correlation
            slope, icpt = np.polyfit(x, y, 1)
            xs = np.array([x.min(), x.max()])
            ax.plot(xs, slope * xs + icpt, color=dots.get_facecolor()[0], lw=1, alpha=0.6)
    ax.set_xlabel(f"ASR {metric} (%)")
    ax.set_ylabel("emotion macro-F1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    return path


def confusion_panel(panels: list[tuple[str, np.ndarray]], classes: list[str], title: str, path: Path) -> Path:
    """Row-normalized confusion matrices side by side, one per SNR (paper Fig. 5), one colour scale."""
    k = len(classes)
    fig = Figure(figsize=((0.9 * k + 0.6) * len(panels) + 1.2, 0.9 * k + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    im = None
    for ax, (label, matrix) in zip(axes, panels):
        im = _confusion_cells(ax, matrix, classes, counts=False, class_rows=ax is axes[0])
        ax.set_title(label, fontsize=9)
    axes[0].set_ylabel("true")
    fig.colorbar(im, ax=list(axes), label="% of true class", shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def layer_weight_plot(labels: list[str], layers: list[str], grid: np.ndarray, title: str, path: Path) -> Path:
    """Mean learned layer weight per (fusion cell, layer) as a heat map; blank where a cell's stack
    has no such layer. A row's weights sum to 1, or to 1 per stack where the fusion mixes each stack on its own."""
    fig = Figure(figsize=(0.55 * len(layers) + 3.8, 0.42 * len(labels) + 1.6), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="Purples", vmin=0, vmax=max(float(np.nanmax(grid)), 1e-9),
                   aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] > 0.6 * np.nanmax(grid) else "black")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    fig.colorbar(im, ax=ax, label="weight (mean over runs x folds)")
    ax.set_title(f"Learned layer weights: {title}", fontsize=9)
    fig.savefig(path, dpi=110)
    return path
