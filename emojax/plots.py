"""Break-point curves and diagnostic plots (matplotlib, Agg backend, PNG files).

Every curve is drawn with its 95 % band; the break point is marked where one exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Band = Mapping[str, Sequence[float]]  # {"est": [P], "lo": [P], "hi": [P]}


def _band(ax, x, band: Band, label: str, color=None) -> None:
    est, lo, hi = (np.asarray(band[k], float) for k in ("est", "lo", "hi"))
    (line,) = ax.plot(x, est, marker="o", label=label, color=color)
    ax.fill_between(x, lo, hi, alpha=0.25, color=line.get_color(), linewidth=0)


def _axis(ax, labels: Sequence[str], xlabel: str) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def _mark_break(ax, break_index: int | None, interval: tuple[float, float] | None) -> None:
    if break_index is None:
        ax.text(
            0.99, 0.97, "break point: not reached", transform=ax.transAxes, ha="right", va="top",
            fontsize=9, color="firebrick",
        )  # fmt: skip
        return
    if interval is not None:
        ax.axvspan(interval[0] - 0.1, interval[1] + 0.1, color="firebrick", alpha=0.08)
    ax.axvline(break_index, color="firebrick", linestyle="--", label="break point")


def plot_incremental_value(
    labels: Sequence[str],
    mon: Band,
    steer: Band,
    *,
    mon_threshold: float,
    steer_threshold: float,
    break_index: int | None,
    break_interval: tuple[float, float] | None,
    path: str,
    xlabel: str = "policy dominance (axis point)",
    title: str = "",
) -> None:
    """Δ_mon and Δ_steer along the axis with bands, thresholds and the break point."""
    x = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, band, thr, name, unit in (
        (axes[0], mon, mon_threshold, "Δ_mon", "AUROC(controls+emotion) − AUROC(controls)"),
        (axes[1], steer, steer_threshold, "Δ_steer", "failure rate: controls − controls+emotion"),
    ):
        _band(ax, x, band, name)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.axhline(thr, color="gray", linestyle=":", label=f"threshold {thr:g}")
        _mark_break(ax, break_index, break_interval)
        _axis(ax, labels, xlabel)
        ax.set_ylabel(unit)
        ax.set_title(f"incremental {'monitoring' if name == 'Δ_mon' else 'steering'} value")
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(
    labels: Sequence[str],
    panels: Mapping[str, Mapping[str, Band]],
    *,
    path: str,
    xlabel: str = "policy dominance (axis point)",
    title: str = "",
    break_index: int | None = None,
    logy: Sequence[str] = (),
) -> None:
    """One panel per metric group; each group maps a curve name to its band.

    Args:
      labels: [P] axis labels.
      panels: {panel title: {curve name: {"est", "lo", "hi"}}}.
      path: output PNG.
      xlabel: x-axis label.
      title: figure title.
      break_index: marks the break point when given.
      logy: titles of panels drawn on a log y axis (ratios spanning decades).
    """
    x = np.arange(len(labels))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4), constrained_layout=True, squeeze=False)
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for name, band in curves.items():
            _band(ax, x, band, name)
        if break_index is not None:
            ax.axvline(break_index, color="firebrick", linestyle="--", label="break point")
        _axis(ax, labels, xlabel)
        values = np.concatenate([np.asarray(b["est"], float) for b in curves.values()])
        if panel in logy and np.nanmax(values, initial=0.0) > 0:
            ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_ylabel(panel)
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_matrices(
    matrices: np.ndarray,
    names: Sequence[str],
    labels: Sequence[str],
    *,
    path: str,
    title: str = "cross-steering matrix M[i, j]: readout j per unit coefficient of vector i",
) -> None:
    """A heatmap per axis point of [P, C, C] matrices, on one shared symmetric colour scale."""
    matrices = np.asarray(matrices, float)
    p = matrices.shape[0]
    vmax = float(np.nanmax(np.abs(matrices))) or 1.0
    fig, axes = plt.subplots(
        1, p, figsize=(3.4 * p + 1, 3.6), constrained_layout=True, squeeze=False
    )
    im = None
    for ax, m, label in zip(axes[0], matrices, labels, strict=True):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel("readout j")
        ax.set_title(label)
    axes[0][0].set_ylabel("steering vector i")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
