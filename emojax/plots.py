"""Break-point curves and diagnostic plots (matplotlib, Agg backend, PNG files).

Every statistic is drawn with its 95 % interval, or labelled "no interval" where none is
computed, and with its random-direction null where one exists. The break rule's statuses are
drawn (`STATUS_STYLE`), never inferred from gaps; a panel without an estimate gets no break
line. The `*_figure` functions return the matplotlib Figure (tests read its artists: the
break line has gid "break_line", its band "break_band"); the `plot_*` functions save it.
Files are published atomically (`emojax.results.save_figure`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from emojax import results  # noqa: E402

Band = Mapping[str, Sequence[float]]  # {"est": [P], "lo": [P], "hi": [P]}

# How each status of the break rule (emojax.breakpoint.STATUSES) is drawn.
STATUS_STYLE: dict[str, dict[str, Any]] = {
    "present": {"marker": "o", "color": "#1a9850", "mfc": "#1a9850",
                "label": "present: interval above 0 and not below the margin"},
    "vanished": {"marker": "v", "color": "#2166ac", "mfc": "#2166ac",
                 "label": "vanished: upper bound below the margin"},
    "undetermined": {"marker": "o", "color": "#d95f02", "mfc": "white",
                     "label": "undetermined: interval straddles the margin"},
    "failures eliminated": {"marker": "s", "color": "0.35", "mfc": "0.35",
                            "label": "failures eliminated: failure rate below the floor"},
}  # fmt: skip
UNDETERMINED_HATCH = "undetermined (hatched column): not estimable, or straddles the margin"
ELIMINATED_SHADE = "failures eliminated (grey column)"
NULL_LABEL = "random-direction null, 5–95 %"
OFF_SCALE = "beyond the axis: arrow, estimate [95 % CI] printed"
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                     "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9})  # fmt: skip


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


def _axis(ax, labels: Sequence[str], xlabel: str, ticks: Sequence[str] | None = None) -> None:
    """Axis points as ticks (kept level when short), x range with room at both ends."""
    ticks = list(labels if ticks is None else ticks)
    slant = max((len(t) for t in labels), default=0) > 9 or len(labels) > 6
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(ticks, rotation=20 if slant else 0, ha="right" if slant else "center")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def _floats(v: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    """[n] floats of `v[key]` (None -> NaN); all NaN when the key is absent."""
    raw = v.get(key)
    if raw is None:
        return np.full(n, np.nan)
    return np.array([np.nan if x is None else x for x in raw], np.float64)


def _legend_below(ax, ncol: int = 2) -> None:
    """The axes' legend under its x label, so that it never covers a curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False)


def _break_marks(ax, index: int, interval: tuple[int, int] | None, num_points: int, label: str):
    """The break line (gid 'break_line') and its 95 % band (gid 'break_band')."""
    if interval is not None:
        lo_i, hi_i = interval
        right = num_points - 0.4 if hi_i >= num_points else hi_i + 0.45  # reaches past the axis
        band = ax.axvspan(max(lo_i, 0) - 0.45, right, color="firebrick", alpha=0.08, lw=0,
                          label="break point, 95 % interval")  # fmt: skip
        band.set_gid("break_band")
    line = ax.axvline(index, color="firebrick", linestyle="--", lw=1.4, label=label)
    line.set_gid("break_line")


def _value_panel(ax, v: Mapping[str, Any], margin: float, clip, handles: dict) -> bool:
    """One Δ along the axis: statuses, estimates with intervals, null, margin.

    Returns:
      Whether the panel shows at least one estimate.
    """
    status = list(v["status"])
    p = len(status)
    est, lo, hi, nlo, nhi = (_floats(v, k, p) for k in ("est", "lo", "hi", "null_lo", "null_hi"))
    ok = np.asarray(v["estimable"], bool) & np.isfinite(est)
    notes = list(v.get("note") or [""] * p)
    inside = ok if clip is None else ok & (est >= clip[0]) & (est <= clip[1])
    vals = np.concatenate([est[inside], lo[inside], hi[inside], nlo[inside], nhi[inside],
                           [0.0, margin]])  # fmt: skip
    vals = vals[np.isfinite(vals)]
    ylo, yhi = float(vals.min()), float(vals.max())
    if clip is not None:
        ylo, yhi = max(ylo, clip[0]), min(yhi, clip[1])
    pad = 0.15 * (yhi - ylo) if yhi > ylo else 0.1
    ax.set_ylim(ylo - pad, yhi + pad)
    top, bottom = yhi + pad, ylo - pad
    ax.axhline(0.0, color="black", linewidth=0.8, zorder=1)
    handles.setdefault("margin", ax.axhline(margin, color="0.3", ls=":", lw=1.5, zorder=1))
    text_y = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i in range(p):
        st = status[i]
        if st == "undetermined":
            span = ax.axvspan(i - 0.42, i + 0.42, facecolor="none", edgecolor="#f4a261",
                              hatch="///", lw=0, zorder=0)  # fmt: skip
            handles.setdefault(UNDETERMINED_HATCH, span)
        elif st == "failures eliminated":
            handles.setdefault(ELIMINATED_SHADE, ax.axvspan(i - 0.42, i + 0.42, color="0.88",
                                                            lw=0, zorder=0))  # fmt: skip
        if not ok[i]:
            head = "failures\neliminated" if st == "failures eliminated" else "not\nestimable"
            note = f"\n{notes[i]}" if notes[i] else ""
            ax.text(i, 0.5, head + note, transform=text_y, ha="center", va="center",
                    fontsize=8, color="0.2", linespacing=1.1,
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.7",
                          "alpha": 0.9})  # fmt: skip
            continue
        if np.isfinite(nlo[i]) and np.isfinite(nhi[i]):
            rect = Rectangle((i - 0.3, nlo[i]), 0.6, max(nhi[i] - nlo[i], 1e-9), color="0.55",
                             alpha=0.35, lw=0, zorder=2)  # fmt: skip
            handles.setdefault(NULL_LABEL, ax.add_patch(rect))
        style = STATUS_STYLE.get(st, STATUS_STYLE["undetermined"])
        if bottom <= est[i] <= top:
            err = [[max(est[i] - lo[i], 0.0)], [max(hi[i] - est[i], 0.0)]]
            bar = ax.errorbar(i, est[i], yerr=err, fmt=style["marker"], color=style["color"],
                              mfc=style["mfc"], ms=8, capsize=4, lw=1.6, mew=1.6,
                              zorder=4)  # fmt: skip
            handles.setdefault(style["label"], bar)
            continue
        # Beyond the axis: an arrow at the edge in the status's colour, the value printed.
        up = est[i] > top
        edge = top - 0.04 * (top - bottom) if up else bottom + 0.04 * (top - bottom)
        arrow = ax.plot(i, edge, marker="^" if up else "v", ms=11, color=style["color"],
                        ls="none", zorder=4)[0]  # fmt: skip
        handles.setdefault(OFF_SCALE, arrow)
        ax.annotate(f"{est[i]:+.2f}\n[{lo[i]:+.2f}, {hi[i]:+.2f}]", (i, edge),
                    xytext=(0, -8 if up else 8), textcoords="offset points", ha="center",
                    va="top" if up else "bottom", fontsize=8, color=style["color"])  # fmt: skip
    return bool(ok.any())


def incremental_value_figure(
    labels: Sequence[str],
    panels: Mapping[str, Mapping[str, Any]],
    *,
    margins: Mapping[str, float],
    scale_labels: Mapping[str, str],
    break_index: int | None,
    break_interval: tuple[int, int] | None,
    break_label: str = "break point",
    headline: str = "",
    xlabel: str = "policy dominance (axis point)",
    title: str = "",
    clip: tuple[float, float] | None = None,
) -> Figure:
    """Δ_mon and Δ_steer per failure type along the axis, on the break rule's scale.

    Each panel draws, per point: the estimate with its 95 % interval, marked by its status
    (`STATUS_STYLE`), the random-direction null's 5–95 % band, and the margin; undetermined
    points get a hatched column, points without an estimate a label inside the panel. The
    break line and its band are drawn only where `break_index` is given and only on panels
    with an estimate. One legend under the panels lists what was drawn.

    Args:
      labels: [P] axis labels.
      panels: per Δ name ('delta_mon/harmful_compliance', ...): 'est', 'lo', 'hi',
        'null_lo', 'null_hi' [P] on the rule's scale (NaN / None: none), 'status' [P]
        (`emojax.breakpoint.STATUSES`), 'estimable' [P], 'note' [P] (text under "not
        estimable", e.g. the request counts), 'required' (bool).
      margins: the margin per Δ name or per statistic ('delta_mon'), on the rule's scale.
      scale_labels: y-axis label per statistic ('delta_mon', 'delta_steer').
      break_index: axis index of the break (None: no break line anywhere).
      break_interval: the break's 95 % interval as codes (b; P: not reached; P + 1:
        insufficient data), or None.
      break_label: the break line's legend entry.
      headline: the break rule's outcome in words, under the title.
      xlabel: x-axis label.
      title: figure title.
      clip: y range (lo, hi) beyond which estimates are drawn as arrows with their value.

    Returns:
      The figure (2 columns, a row per statistic).
    """
    num_points = len(labels)
    names = list(panels)
    cols = 2
    rows = -(-len(names) // cols)
    width = max(11.0, 2.6 * num_points + 3.0)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 3.6 * rows + 1.4),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    handles: dict[str, Any] = {}
    for ax, name in zip(axes.flat, names, strict=False):
        v = panels[name]
        stat, ftype = name.split("/")
        margin = float(margins[name] if name in margins else margins[stat])
        has_estimate = _value_panel(ax, v, margin, clip, handles)
        if break_index is not None and has_estimate:
            _break_marks(ax, break_index, break_interval, num_points, break_label)
            for artist in ax.lines + ax.patches:
                if artist.get_gid() in ("break_line", "break_band"):
                    handles.setdefault(artist.get_label(), artist)
        _axis(ax, labels, xlabel)
        need = "required" if v.get("required", True) else "not required by the rule"
        ax.set_title(f"{stat.replace('delta_', 'Δ_')}: {ftype.replace('_', ' ')} ({need})")
        ax.set_ylabel(scale_labels.get(stat, stat))
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    margin_text = ", ".join(f"{k.replace('delta_', 'Δ_')} {float(m):g}" for k, m in margins.items())
    labels_out = [f"margin ({margin_text})" if k == "margin" else k for k in handles]
    if handles:
        fig.legend(list(handles.values()), labels_out, loc="outside lower center",
                   ncol=2 if len(handles) > 3 else len(handles), frameon=False)  # fmt: skip
    if title or headline:
        fig.suptitle("\n".join(t for t in (title, headline) if t))
    return fig


def plot_incremental_value(labels: Sequence[str], panels, *, path: str, **kwargs) -> None:
    """Writes `incremental_value_figure(labels, panels, **kwargs)` to `path` (PNG)."""
    _save(incremental_value_figure(labels, panels, **kwargs), path)


def _dodged(ax, curves: Mapping[str, Band], width: float = 0.24) -> None:
    """Several estimates per point, side by side, each with its interval (or 'no interval')."""
    n = len(curves)
    for k, (name, band) in enumerate(curves.items()):
        p = len(band["est"])
        est, lo, hi = (_floats(band, key, p) for key in ("est", "lo", "hi"))
        x = np.arange(p) + (k - (n - 1) / 2) * (width / max(n - 1, 1) if n > 1 else 0.0)
        has_ci = bool((np.isfinite(lo) & np.isfinite(hi)).any())
        label = name if has_ci else f"{name} (no interval computed)"
        yerr = np.abs(np.stack([est - lo, hi - est])) if has_ci else None
        ax.errorbar(x, est, yerr=yerr, marker="o", ms=6, capsize=3, lw=1.4, label=label)


def stability_modularity_figure(
    labels: Sequence[str],
    *,
    stability: Mapping[str, Band],
    selectivity: Mapping[str, Any],
    style: Mapping[str, Any],
    policy: Mapping[str, Band],
    xlabel: str = "policy dominance (axis point)",
    title: str = "",
    break_index: int | None = None,
) -> Figure:
    """Stability, selectivity, style-vs-safety and policy along the axis, a 2 x 2 grid.

    Args:
      labels: [P] axis labels.
      stability: curve name -> band ('est', 'lo', 'hi' [P]) of a cosine.
      selectivity: 'mean' [P] (over the emotion vectors), 'per_vector' {name: [P]},
        'null_p' [P] (the null's p-value per point, printed under the tick), optionally
        'null_lo' / 'null_hi' [P] (the null's 5–95 %) and 'lo' / 'hi' [P] (an interval of
        the mean), 'threshold' (the diagnostic's).
      style: 'median' [P], 'ratios' [(point, emotion, failure type, est, lo, hi)] (each
        defined ratio with its interval), 'threshold'.
      policy: curve name -> band (lo / hi None where no interval is computed).
      xlabel: x-axis label.
      title: figure title.
      break_index: a break line on every panel when given.

    Returns:
      The figure.
    """
    num_points = len(labels)
    width = max(12.0, 2.4 * num_points + 4.0)
    fig, axes = plt.subplots(2, 2, figsize=(width, 9.5), constrained_layout=True)
    ax = axes[0, 0]
    _dodged(ax, stability)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
    ax.set_title("stability of the emotion vectors")
    ax.set_ylabel("cosine (mean over emotions)")
    _axis(ax, labels, xlabel)

    ax = axes[0, 1]
    mean = _floats(selectivity, "mean", num_points)
    nlo, nhi = _floats(selectivity, "null_lo", num_points), _floats(selectivity, "null_hi",
                                                                     num_points)  # fmt: skip
    for i in np.flatnonzero(np.isfinite(nlo) & np.isfinite(nhi)):
        ax.add_patch(Rectangle((i - 0.3, nlo[i]), 0.6, nhi[i] - nlo[i], color="0.55", alpha=0.35,
                               lw=0, label=NULL_LABEL if i == 0 else None))  # fmt: skip
    markers = "^sDvP*"
    for k, (name, vals) in enumerate(selectivity.get("per_vector", {}).items()):
        ax.plot(np.arange(num_points) + 0.12, _floats({"v": vals}, "v", num_points), ls="none",
                marker=markers[k % len(markers)], ms=5, alpha=0.7, label=name)  # fmt: skip
    lo, hi = _floats(selectivity, "lo", num_points), _floats(selectivity, "hi", num_points)
    has_ci = bool(np.isfinite(lo).any())
    yerr = np.abs([mean - lo, hi - mean]) if has_ci else None
    label = "mean over emotions" + ("" if has_ci else " (no interval computed)")
    ax.errorbar(np.arange(num_points), mean, yerr=yerr, marker="o", ms=7, color="black",
                capsize=3, label=label)  # fmt: skip
    thr = selectivity.get("threshold")
    if thr is not None:
        ax.axhline(thr, color="0.3", ls=":", lw=1.3, label=f"diagnostic threshold {thr:g}")
    ps = _floats(selectivity, "null_p", num_points)
    ticks = [f"{lab}\nnull p {p:.2f}" if np.isfinite(p) else f"{lab}\nno null"
             for lab, p in zip(labels, ps, strict=True)]  # fmt: skip
    ax.set_title("selectivity of the emotion vectors")
    ax.set_ylabel(r"$|M_{ii}|\ /\ \mathrm{mean}_{j \neq i}\ |M_{ij}|$")
    _axis(ax, labels, xlabel, ticks)

    ax = axes[1, 0]
    ratios = list(style.get("ratios", ()))
    emotions = list(dict.fromkeys(r[1] for r in ratios))
    type_marker = {"harmful_compliance": "o", "over_refusal": "s"}
    seen = set()
    for i, emo, ftype, est, lo_r, hi_r in ratios:
        k = emotions.index(emo)
        x = i + (k - (len(emotions) - 1) / 2) * 0.12 + (0.04 if ftype == "over_refusal" else 0)
        lo_r = lo_r if lo_r is not None and lo_r > 0 else est / 10
        hi_r = hi_r if hi_r is not None and np.isfinite(hi_r) else est
        label = f"{emo}, {ftype.replace('_', ' ')}"
        ax.errorbar(x, est, yerr=[[est - lo_r], [hi_r - est]], marker=type_marker.get(ftype, "o"),
                    color=f"C{k}", ms=6, capsize=3, ls="none",
                    label=None if label in seen else label)  # fmt: skip
        seen.add(label)
    med = _floats(style, "median", num_points)
    if np.isfinite(med).any():
        ax.plot(np.arange(num_points), med, ls="none", marker="_", ms=22, mew=2.5, color="black",
                label="median (points.csv)")  # fmt: skip
    defined_at = {r[0] for r in ratios}
    for i in range(num_points):
        if i not in defined_at:
            ax.text(i, 0.5, "not defined:\nno safety\neffect's interval\nexcludes 0",
                    ha="center", va="center", fontsize=8, color="0.25", linespacing=1.1,
                    transform=ax.get_xaxis_transform(),
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.7"})  # fmt: skip
    ax.set_yscale("log")
    if not ratios:
        ax.set_ylim(0.1, 10.0)
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    thr = style.get("threshold")
    if thr is not None:
        ax.axhline(thr, color="0.3", ls=":", lw=1.3, label=f"diagnostic threshold {thr:g}")
    ax.set_title("style vs safety (per emotion and failure type, 95 % CI)")
    ax.set_ylabel("|style effect| / |safety effect|")
    _axis(ax, labels, xlabel)

    ax = axes[1, 1]
    _dodged(ax, policy)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("policy dominance and unsteered failures")
    ax.set_ylabel("R² / failure rate")
    _axis(ax, labels, xlabel)

    for ax in axes.flat:
        if break_index is not None:
            line = ax.axvline(break_index, color="firebrick", ls="--", lw=1.3, label="break point")
            line.set_gid("break_line")
        _legend_below(ax)
    if title:
        fig.suptitle(title)
    return fig


def plot_stability_modularity(labels: Sequence[str], *, path: str, **kwargs) -> None:
    """Writes `stability_modularity_figure(labels, **kwargs)` to `path` (PNG)."""
    _save(stability_modularity_figure(labels, **kwargs), path)


def plot_curves(
    labels: Sequence[str],
    panels: Mapping[str, Mapping[str, Band]],
    *,
    path: str,
    xlabel: str = "policy dominance (axis point)",
    title: str = "",
    break_index: int | None = None,
) -> None:
    """One panel per metric group (two columns); each group maps a curve name to its band.

    Args:
      labels: [P] axis labels.
      panels: {panel title: {curve name: {"est", "lo", "hi"}}}.
      path: output PNG.
      xlabel: x-axis label.
      title: figure title.
      break_index: marks the break point when given.
    """
    n = len(panels)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), constrained_layout=True,
                             squeeze=False)  # fmt: skip
    for ax, (panel, curves) in zip(axes.flat, panels.items(), strict=False):
        _dodged(ax, curves)
        if break_index is not None:
            ax.axvline(break_index, color="firebrick", linestyle="--", label="break point")
        _axis(ax, labels, xlabel)
        ax.set_title(panel)
        _legend_below(ax)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above x (x > 0)."""
    k = math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10.0**k >= x * (1 - 1e-12):
            return m * 10.0**k
    return 10.0 ** (k + 1)


def colour_range(matrices: np.ndarray, quantile: float = 0.95) -> float:
    """A shared symmetric colour range: the `quantile` of |M| rounded up (1, 2, 2.5, 5 x 10^k).

    A few large entries no longer wash out the rest; the cells beyond it are outlined and
    carry their value (`cross_steering_figure`).
    """
    a = np.abs(np.asarray(matrices, np.float64))
    a = a[np.isfinite(a)]
    if not a.size or a.max() == 0:
        return 1.0
    return _nice_ceiling(float(np.quantile(a, quantile)) or float(a.max()))


def cross_steering_figure(
    matrices: np.ndarray,
    rows: Sequence[str],
    labels: Sequence[str],
    *,
    cols: Sequence[str] | None = None,
    vmax: float | None = None,
    title: str = "cross-steering matrix M[i, j]: change of readout j per unit coefficient of "
    "vector i",
) -> Figure:
    """A heatmap per axis point of [P, I, J] matrices with the value in every cell.

    One shared symmetric colour scale (`vmax`, default `colour_range`), stated in the title
    and on the colour bar; cells beyond it are outlined in black and the bar gets arrows.

    Args:
      matrices: [P, I, J].
      rows: [I] steering vectors.
      labels: [P] axis labels.
      cols: [J] readouts (default: `rows`).
      vmax: the colour range ±vmax.
      title: figure title.

    Returns:
      The figure.
    """
    matrices = np.asarray(matrices, float)
    p, ni, nj = matrices.shape
    cols = list(rows if cols is None else cols)
    vmax = colour_range(matrices) if vmax is None else float(vmax)
    beyond = np.abs(matrices) > vmax
    ncol = min(p, 3)
    nrow = -(-p // ncol)
    cell = 0.62 if max(ni, nj) <= 8 else 0.45
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * (nj * cell + 1.6) + 1.2,
                                                  nrow * (ni * cell + 1.9) + 0.8),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    im = None
    size = 8 if max(ni, nj) <= 6 else 7 if max(ni, nj) <= 8 else 6
    for ax, m, label, out in zip(axes.flat, matrices, labels, beyond, strict=False):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        for i in range(ni):
            for j in range(nj):
                v = m[i, j]
                if not np.isfinite(v):
                    ax.text(j, i, "–", ha="center", va="center", fontsize=size)
                    continue
                dark = abs(v) > 0.6 * vmax
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=size,
                        color="white" if dark else "black",
                        fontweight="bold" if out[i, j] else "normal")  # fmt: skip
                if out[i, j]:
                    ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, ec="black",
                                           lw=1.8))  # fmt: skip
        ax.set_xticks(range(nj))
        ax.set_xticklabels(cols, rotation=45, ha="right")
        ax.set_yticks(range(ni))
        ax.set_yticklabels(rows)
        ax.set_xlabel("readout j")
        ax.set_ylabel("steering vector i")
        ax.set_title(label)
    for ax in list(axes.flat)[p:]:
        ax.axis("off")
    extend = ("both" if (matrices < -vmax).any() and (matrices > vmax).any() else
              "min" if (matrices < -vmax).any() else "max" if (matrices > vmax).any() else
              "neither")  # fmt: skip
    bar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6 if nrow > 1 else 0.8, extend=extend)
    bar.set_label(f"M[i, j], colour range ±{vmax:g}")
    n_out = int(beyond.sum())
    beyond_text = f"{n_out} cell(s) beyond it outlined" if n_out else "no cell beyond it"
    note = f"colour range ±{vmax:g}, shared by every panel; {beyond_text}"
    fig.suptitle(f"{title}\n{note}")
    return fig


def plot_matrices(
    matrices: np.ndarray, names: Sequence[str], labels: Sequence[str], *, path: str, **kwargs
) -> None:
    """Writes `cross_steering_figure(matrices, names, labels, **kwargs)` to `path` (PNG)."""
    _save(cross_steering_figure(matrices, names, labels, **kwargs), path)


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
