"""Break-point curves and diagnostic plots (matplotlib, Agg backend, PNG files).

Every curve is drawn with its 95 % band; the break point is marked where one exists. Files
are published atomically (`emojax.results.save_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emojax import results  # noqa: E402

Band = Mapping[str, Sequence[float]]  # {"est": [P], "lo": [P], "hi": [P]}


def _save(fig, path: str, **kwargs) -> None:
    """Publishes the figure atomically (a kill never leaves a truncated PNG), then closes it."""
    try:
        results.save_figure(fig, path, dpi=110, **kwargs)
    finally:
        plt.close(fig)


def _band(ax, x, band: Band, label: str, color=None) -> None:
    est, lo, hi = (np.asarray(band[k], float) for k in ("est", "lo", "hi"))
    (line,) = ax.plot(x, est, marker="o", label=label, color=color)
    ax.fill_between(x, lo, hi, alpha=0.25, color=line.get_color(), linewidth=0)


def _axis(ax, labels: Sequence[str], xlabel: str) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def plot_incremental_value(
    labels: Sequence[str],
    values: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    margins: Mapping[str, float],
    break_index: int | None,
    break_interval: tuple[int, int] | None,
    outcome: str,
    path: str,
    xlabel: str = "policy dominance (axis point)",
    title: str = "",
) -> None:
    """Δ_mon and Δ_steer per failure type along the axis: bands, nulls, margins, break point.

    Args:
      labels: [P] axis labels.
      values: {"delta_mon/harmful_compliance": {"est", "lo", "hi", "null_lo", "null_hi",
        "estimable"}, ...}: one panel each; points that are not estimable are marked "n/e"
        instead of being drawn.
      margins: equivalence margin per statistic ("delta_mon", "delta_steer").
      break_index: the break point (None: not reached / failures eliminated first).
      break_interval: integer axis indices of its 95 % interval (P = not reached).
      outcome: the break rule's outcome, shown when there is no break.
      path: output PNG.
      xlabel: x-axis label.
      title: figure title.
    """
    x = np.arange(len(labels))
    names = list(values)
    cols = 2
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(11, 3.8 * rows), constrained_layout=True, squeeze=False
    )
    for ax, name in zip(axes.flat, names, strict=False):
        v = values[name]
        ok = np.asarray(v["estimable"], bool)
        est, lo, hi = (np.where(ok, np.asarray(v[k], float), np.nan) for k in ("est", "lo", "hi"))
        (line,) = ax.plot(x, est, marker="o", label="estimate (95 % CI)")
        ax.fill_between(x, lo, hi, alpha=0.25, color=line.get_color(), linewidth=0)
        nlo = np.where(ok, np.asarray(v["null_lo"], float), np.nan)
        nhi = np.where(ok, np.asarray(v["null_hi"], float), np.nan)
        ax.fill_between(x, nlo, nhi, alpha=0.18, color="gray", linewidth=0,
                        label="random-direction null (5–95 %)")  # fmt: skip
        stat, ftype = name.split("/")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.axhline(margins[stat], color="gray", linestyle=":", label=f"margin {margins[stat]:g}")
        for i in np.flatnonzero(~ok):
            ax.text(i, 0.0, "not\nestimable", ha="center", va="bottom", fontsize=7,
                    color="dimgray")  # fmt: skip
        if break_index is not None:
            if break_interval is not None:
                lo_i, hi_i = break_interval
                ax.axvspan(lo_i - 0.1, min(hi_i, len(labels) - 1) + 0.1, color="firebrick",
                           alpha=0.08)  # fmt: skip
            ax.axvline(break_index, color="firebrick", linestyle="--", label="break point")
        else:
            ax.text(0.99, 0.97, f"break point: {outcome}", transform=ax.transAxes, ha="right",
                    va="top", fontsize=9, color="firebrick")  # fmt: skip
        _axis(ax, labels, xlabel)
        kind = "monitoring (AUROC)" if stat == "delta_mon" else "steering (failure rate)"
        ax.set_title(f"{stat.replace('delta_', 'Δ_')}: {ftype.replace('_', ' ')}", fontsize=10)
        ax.set_ylabel(f"incremental {kind}")
        ax.legend(loc="lower left", fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    _save(fig, path)


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
    _save(fig, path)


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
        1, p, figsize=(3.4 * p + 1, 4.6), constrained_layout=True, squeeze=False
    )
    im = None
    for ax, m, label in zip(axes[0], matrices, labels, strict=True):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel("readout j", fontsize=8)
        ax.set_title(label, fontsize=9)
    axes[0][0].set_ylabel("steering vector i")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=10)  # constrained layout keeps it above the panel titles
    _save(fig, path, bbox_inches="tight")


def plot_dose_response(
    arrays: Mapping[str, np.ndarray], meta: Mapping, *, path: str, title: str
) -> None:
    """A steering sweep's dose-response per layer: refusal score and failure rate (harmful
    compliance or over-refusal) against the coefficient, per named vector, over the band of the
    random directions (5-95 % of their prompt means).

    Args:
      arrays: `SweepResults.arrays` (grid_refusal_score, grid_harmful_compliance,
        grid_over_refusal [A, I, K, N]).
      meta: `SweepResults.meta` (coefs, vector_names, num_named, layers).
      path: output PNG.
      title: the model's name in the panel titles.
    """
    a = arrays
    coefs, names, k = np.asarray(meta["coefs"]), meta["vector_names"], meta["num_named"]
    layers = meta["layers"]
    fig, axes = plt.subplots(len(layers), 2, figsize=(11, 4 * len(layers)), squeeze=False)
    for li, layer in enumerate(layers):
        fail = np.fmax(a["grid_harmful_compliance"][li], a["grid_over_refusal"][li])
        for ax, y, label in (
            (axes[li, 0], a["grid_refusal_score"][li], "refusal score (log-odds)"),
            (axes[li, 1], fail, "failure rate (harmful compliance or over-refusal)"),
        ):
            mean = np.nanmean(y, axis=-1)  # [I, K]
            if len(names) > k and not np.isnan(mean[k:]).all():
                lo, hi = np.nanpercentile(mean[k:], [5, 95], axis=0)
                ax.fill_between(coefs, lo, hi, color="0.85", label="random 5-95 %")
            for i in range(k):
                ax.plot(coefs, mean[i], marker="o", label=names[i])
            ax.set_xlabel("coefficient (x median residual norm)")
            ax.set_ylabel(label)
            ax.set_title(f"{title}: layer {layer}")
        axes[li, 0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_cross_steering(summary: Mapping, layers: Sequence[int], *, path: str, title: str) -> None:
    """A steering sweep's cross-steering matrix M[i, j] per layer (readout j per unit
    coefficient of vector i), each on its own symmetric colour scale.

    Args:
      summary: `SweepResults.summary` (per layer: cross_steering rows, cols, matrix).
      layers: the sweep layers (`meta["layers"]`).
      path: output PNG.
      title: the model's name in the panel titles.
    """
    fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 4.5), squeeze=False)
    for li, layer in enumerate(layers):
        cs = summary[str(layer)]["cross_steering"]
        m = np.asarray(cs["matrix"])
        ax = axes[0, li]
        lim = max(np.abs(m).max(), 1e-9)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(cs["cols"])), cs["cols"], rotation=45, ha="right")
        ax.set_yticks(range(len(cs["rows"])), cs["rows"])
        ax.set_xlabel("readout concept j")
        ax.set_ylabel("steering vector i")
        ax.set_title(f"{title}: M[i, j], layer {layer}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    _save(fig, path)


def plot_stability(path: str, report: Mapping, title: str) -> None:
    """Layer x layer cosine heatmap per concept, plus split-half stability per layer.

    Args:
      path: output PNG.
      report: `emojax.metrics.stability.stability_report` output (`concepts`, `layer_cosine`
        [C, L, L] and `split_half` [C, L] intervals).
      title: figure title (e.g. the model's name).
    """
    names, lc, sh = report["concepts"], report["layer_cosine"], report["split_half"]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.2))
    for ax, name, mat in zip(axes, names, np.asarray(lc.estimate), strict=False):
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r")
        ticks = range(mat.shape[0])
        ax.set(title=name, xlabel="site", ylabel="site", xticks=ticks, yticks=ticks)
    fig.colorbar(im, ax=axes[-2], fraction=0.046)
    ax = axes[-1]
    layers = np.arange(np.shape(sh.estimate)[1])
    for c, name in enumerate(names):
        err = [sh.estimate[c] - sh.lo[c], sh.hi[c] - sh.estimate[c]]
        ax.errorbar(layers, sh.estimate[c], yerr=err, label=name, capsize=2)
    ax.set(title="split-half cosine (95% CI)", xlabel="site", xticks=layers, ylim=(-0.05, 1.05))
    ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_probe_layers(
    path: str, rows: Sequence[Mapping], set_names: Sequence[str], title: str, headline: int
) -> None:
    """Δ_mon per layer with its 95 % band (left) and out-of-fold AUROC per feature set.

    Args:
      path: output PNG.
      rows: `emojax.probes.MonitorResult.layer_rows()`, one per layer.
      set_names: the feature sets whose AUROC columns are drawn.
      title: panel title prefix (e.g. the model's name).
      headline: the reported layer (a dashed line).
    """
    layers = np.array([r["layer"] for r in rows])
    get = lambda k: np.array([r[k] for r in rows], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.fill_between(layers, get("delta_mon_lo"), get("delta_mon_hi"), alpha=0.3, label="95% CI")
    ax.plot(layers, get("delta_mon"), marker="o", label="Δ_mon")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(headline, color="0.6", ls="--", lw=0.8)
    ax.set(xlabel="layer (resid site)", ylabel="AUROC(controls+emotion) − AUROC(controls)")
    ax.set_title(f"{title}: Δ_mon")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name in set_names:
        ax.fill_between(layers, get(f"auroc_lo[{name}]"), get(f"auroc_hi[{name}]"), alpha=0.15)
        ax.plot(layers, get(f"auroc[{name}]"), marker="o", label=name)
    ax.set(xlabel="layer (resid site)", ylabel="out-of-fold AUROC", title=f"{title}: AUROC")
    for ax in axes:
        ax.set_xticks(layers)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
