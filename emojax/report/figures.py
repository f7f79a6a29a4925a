"""The inputs of the break-point plots (`emojax.plots`) from the points and the rule."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emojax import plots
from emojax.breakpoint import BreakPoint
from emojax.report.words import FAILURE_TYPES, finite, rule_scale, share

SCALE_LABELS = {
    ("delta_mon", "relative"): "Δ_mon / (1 − AUROC controls)\nshare of the controls' headroom "
    "closed",
    ("delta_mon", "absolute"): "Δ_mon (AUROC difference)",
    ("delta_steer", "relative"): "Δ_steer / unsteered failure rate\nshare of failures fixed beyond "
    "controls",
    ("delta_steer", "absolute"): "Δ_steer (failure-rate difference)",
}
RELATIVE_CLIP = (-2.0, 2.0)  # relative Δs beyond this are drawn as arrows with their value


def rule_null(
    row: Mapping, value: Mapping, name: str, scale: str, floor: float = 0.0
) -> tuple[float, float]:
    """The null's 5 / 95 % quantiles on the rule's scale.

    The pipeline stores them on the absolute scale; the relative scale divides by the same
    point's denominator (unsteered failure rate for Δ_steer, 1 − AUROC(controls) for Δ_mon),
    held at `floor` from below as `emojax.metrics.scales` does, else by the ratio of the
    point's relative and absolute estimates.
    """
    key = name.replace("/", "_")
    q = [row.get(f"{key}_null_q05"), row.get(f"{key}_null_q95")]
    q = [float(x) if finite(x) else np.nan for x in q]
    if scale != "relative":
        return q[0], q[1]
    if name.startswith("delta_steer"):
        den = value.get("unsteered_rate")
    else:
        auc = value.get("auroc_controls")
        den = 1.0 - auc if finite(auc) else None
    if finite(den):
        den = max(float(den), floor)
    if finite(den) and den > 1e-6:
        return q[0] / den, q[1] / den
    a, r = row.get(key), row.get(key + "_rel")
    if finite(a) and finite(r) and a != 0:
        return q[0] * r / a, q[1] * r / a
    return np.nan, np.nan


def min_denominator(cfg, stat: str) -> float:
    """The floor of a relative scale's denominator (`breakpoint.mon_min_headroom` /
    `steer_min_rate`; 0: none)."""
    b = cfg.breakpoint
    return float(b.get("mon_min_headroom" if stat == "delta_mon" else "steer_min_rate", 0.0))


def scale_label(cfg, stat: str) -> str:
    """The y-axis label of a statistic on the rule's scale, with its denominator's floor."""
    scale = rule_scale(cfg, stat)
    floor = min_denominator(cfg, stat)
    label = SCALE_LABELS[(stat, scale)]
    if scale == "relative" and floor > 0:
        den = "1 − AUROC controls" if stat == "delta_mon" else "unsteered failure rate"
        label = label.replace(f"({den})", den).replace(den, f"max({den}, {floor:g})")
    return label


def incremental_panels(
    points: Sequence[Mapping], deltas: Mapping[str, Mapping], brk: BreakPoint, cfg
) -> dict[str, dict]:
    """The panels of `plots.incremental_value_figure` from the points and the rule's inputs."""
    rows = [p["row"] for p in points]
    panels = {}
    for name, d in deltas.items():
        stat, ftype = name.split("/")
        key = name.replace("/", "_")
        scale = d.get("scale", rule_scale(cfg, stat))
        ok = np.asarray(d["estimable"], bool)
        values = [p.get("values", {}).get(name) or p.get("detail", {}).get(stat, {}).get(ftype, {})
                  for p in points]  # fmt: skip
        floor = min_denominator(cfg, stat)
        nulls = [
            rule_null(r, v or {}, name, scale, floor) for r, v in zip(rows, values, strict=True)
        ]
        panels[name] = {
            **{k: np.where(ok, np.asarray(d[f], float), np.nan)
               for k, f in (("est", "estimate"), ("lo", "lo"), ("hi", "hi"))},
            "null_lo": [n[0] for n in nulls],
            "null_hi": [n[1] for n in nulls],
            "status": brk.status.get(name, ["undetermined"] * len(rows)),
            "estimable": ok,
            "note": [f"{r.get(f'{key}_failing_requests', '?')} failing /\n"
                     f"{r.get(f'{key}_ok_requests', '?')} ok requests" for r in rows],
            "required": name in brk.required,
        }  # fmt: skip
    return panels


def _band(rows: Sequence[Mapping], key: str, interval: bool = True) -> dict[str, list]:
    return {
        "est": [r.get(key) for r in rows],
        "lo": [r.get(key + "_lo") if interval else None for r in rows],
        "hi": [r.get(key + "_hi") if interval else None for r in rows],
    }


def stability_inputs(points: Sequence[Mapping], cfg) -> dict[str, Any]:
    """The keyword inputs of `plots.stability_modularity_figure` from the points."""
    rows = [p["row"] for p in points]
    emotions = list(cfg.data.emotions)
    per_vector: dict[str, list[float]] = {e: [] for e in emotions}
    null_lo, null_hi = [], []
    ratios = []
    for i, p in enumerate(points):
        detail = p.get("detail", {})
        cs = detail.get("cross_steering", {})
        names = list(cs.get("rows", ()))
        sel = cs.get("selectivity", [])
        for e in emotions:
            per_vector[e].append(sel[names.index(e)] if e in names and sel else np.nan)
        qs = [cs.get(f"selectivity_null_{q}") for q in ("q05", "q95")]
        idx = [names.index(e) for e in emotions if e in names]
        null_lo.append(float(np.nanmean(np.asarray(qs[0])[idx])) if qs[0] and idx else np.nan)
        null_hi.append(float(np.nanmean(np.asarray(qs[1])[idx])) if qs[1] and idx else np.nan)
        for e in emotions:
            entry = detail.get("style_vs_safety", {}).get(e) or {}
            for t in FAILURE_TYPES:
                r = (entry.get("ratio") or {}).get(t)
                if r is None:
                    continue
                iv = (entry.get("ratio_interval") or {}).get(t) or [None, None]
                ratios.append((i, e, t, float(r), iv[0], iv[1]))
    b = cfg.breakpoint
    return {
        "stability": {
            "split-half (templates)": _band(rows, "split_half"),
            "cross-domain": _band(rows, "cross_domain"),
            "vs first axis point": _band(rows, "cross_model_cosine"),
        },
        "selectivity": {
            "mean": [r.get("selectivity") for r in rows],
            "per_vector": {e: v for e, v in per_vector.items() if np.isfinite(v).any()},
            "null_p": [r.get("selectivity_null_p") for r in rows],
            "null_lo": null_lo,
            "null_hi": null_hi,
            "threshold": float(b.get("selectivity", 1.0)),
        },
        "style": {
            "median": [
                r.get("style_vs_safety") if r.get("style_vs_safety_defined") else None for r in rows
            ],
            "ratios": ratios,
            "threshold": float(b.get("style_ratio", 1.0)),
        },  # fmt: skip
        "policy": {
            "policy-dominance index (R²)": _band(rows, "policy_dominance", interval=False),
            "harmful compliance (unsteered)": _band(rows, "harmful_compliance_rate"),
            "over-refusal (unsteered)": _band(rows, "over_refusal_rate"),
        },
    }


def write_figures(cfg, workdir: str, points, deltas, margins, brk: BreakPoint) -> None:
    """incremental_value.png, stability_modularity.png and cross_steering.png of a run.

    Args:
      cfg: the run's config.
      workdir: output directory.
      points: per axis point (`emojax.report.write_outputs`).
      deltas: per Δ name, on the rule's scale (`emojax.pipeline.break_inputs`).
      margins: the margins of the rule.
      brk: the break point.
    """
    b = cfg.breakpoint
    labels = [p["row"]["label"] for p in points]
    xlabel = "policy dominance →  (" + ("weight dial α" if b.axis == "dial" else "model") + ")"
    title = f"{cfg.get('family', '')}"
    has_index = brk.index is not None
    scales = {s: rule_scale(cfg, s) for s in ("delta_mon", "delta_steer")}
    where = f" at {brk.label}" if has_index else ""
    plots.plot_incremental_value(
        labels,
        incremental_panels(points, deltas, brk, cfg),
        margins=margins,
        scale_labels={s: scale_label(cfg, s) for s in scales},
        break_index=brk.index,
        break_interval=tuple(brk.interval_index) if has_index else None,
        break_label=f"{brk.outcome}{where}",
        headline=f"break rule: {brk.outcome}{where}; 95 % interval {brk.interval[0]} … "
        f"{brk.interval[1]} ({share(brk.reached_fraction)} of resamples break)",
        clip=RELATIVE_CLIP if "relative" in scales.values() else None,
        path=os.path.join(workdir, "incremental_value.png"),
        xlabel=xlabel,
        title=title,
    )  # fmt: skip
    plots.plot_stability_modularity(
        labels,
        **stability_inputs(points, cfg),
        path=os.path.join(workdir, "stability_modularity.png"),
        xlabel=xlabel,
        title=title,
        break_index=brk.index,
    )
    plots.plot_matrices(
        np.stack([p["matrix"] for p in points]),
        points[0]["matrix_rows"],
        labels,
        cols=points[0].get("matrix_cols"),
        path=os.path.join(workdir, "cross_steering.png"),
    )
