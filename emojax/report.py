"""Outputs of the break-point analysis: tables, plots, `summary.json` and `report.md`.

Written into the run's work directory:
  config.json         resolved config + provenance (models and hashes, versions, commit, seed)
  summary.json        the break point, thresholds and every axis point's row
  points.csv          one row per axis point
  incremental_value.png, stability_modularity.png, cross_steering.png
  report.md           what was run, the table, the break point, the diagnostics, the plots
  points/<label>/     per-point vectors, stability tables, sweep readouts (per prompt), probes
"""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from emojax import plots, results
from emojax.breakpoint import BreakPoint

TABLE_COLUMNS = (
    ("label", "point", "{}"),
    ("policy_dominance", "PDI (R²)", "{:.2f}"),
    ("failure_rate", "failure rate", "{:.2f}"),
    ("delta_mon", "Δ_mon", "{:+.3f}"),
    ("delta_mon_ci", "Δ_mon 95% CI", "{}"),
    ("delta_steer", "Δ_steer", "{:+.3f}"),
    ("delta_steer_ci", "Δ_steer 95% CI", "{}"),
    ("split_half", "split-half cos", "{:.2f}"),
    ("cross_domain", "cross-domain cos", "{:.2f}"),
    ("cross_model_cosine", "cos vs first point", "{:.2f}"),
    ("selectivity", "selectivity", "{:.2f}"),
    ("offtarget_kl_per_unit_effect", "off-target KL / effect", "{:.3g}"),
    ("style_vs_safety", "style/safety", "{:.2f}"),
)

DIAGNOSTICS = (
    ("diag_failures_controlled_by_policy", "failures already controlled by policy + controls"),
    ("diag_emotion_mostly_stylistic", "emotion interventions mostly stylistic"),
    ("diag_low_alignment_and_selectivity", "low cross-model alignment and low selectivity"),
)


def write_csv(path: str, rows: list[dict]) -> None:
    """Rows of dicts -> CSV (columns: union of keys in first-seen order), written atomically."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(row.get(k)) for k in cols})
    os.replace(tmp, path)


def _cell(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        return f"{float(x):.6g}"
    return x


def _fmt(row: dict, key: str, spec: str) -> str:
    if key.endswith("_ci"):
        base = key[:-3]
        return f"[{row[base + '_lo']:+.3f}, {row[base + '_hi']:+.3f}]"
    value = row.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return spec.format(value)


def markdown_table(rows: list[dict]) -> str:
    """The per-point table of report.md (also used by the README)."""
    head = "| " + " | ".join(name for _, name, _ in TABLE_COLUMNS) + " |"
    sep = "|" + "---|" * len(TABLE_COLUMNS)
    body = ["| " + " | ".join(_fmt(r, k, s) for k, _, s in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _band(rows: list[dict], key: str) -> dict[str, list[float]]:
    return {
        "est": [r[key] for r in rows],
        "lo": [r.get(key + "_lo", r[key]) for r in rows],
        "hi": [r.get(key + "_hi", r[key]) for r in rows],
    }


def write_outputs(
    cfg,
    workdir: str,
    points: list[dict],
    mon: dict,
    steer: dict,
    brk: BreakPoint,
    seconds: float,
) -> dict:
    """Writes every axis-level output; returns the summary dict."""
    b = cfg.breakpoint
    rows = [p["row"] for p in points]
    labels = [r["label"] for r in rows]
    write_csv(os.path.join(workdir, "points.csv"), rows)
    results.save_arrays(os.path.join(workdir, "break_draws.npz"), {
        "delta_mon_samples": mon["samples"], "delta_steer_samples": steer["samples"],
    })  # fmt: skip
    xlabel = "policy dominance →  (" + ("weight dial α" if b.axis == "dial" else "model") + ")"
    title = f"{cfg.get('family', '')}"
    plots.plot_incremental_value(
        labels,
        {k: mon[k] for k in ("est", "lo", "hi")},
        {k: steer[k] for k in ("est", "lo", "hi")},
        mon_threshold=b.mon_threshold,
        steer_threshold=b.steer_threshold,
        break_index=brk.index,
        break_interval=brk.interval if brk.index is not None else None,
        path=os.path.join(workdir, "incremental_value.png"),
        xlabel=xlabel,
        title=title,
    )
    plots.plot_curves(
        labels,
        {
            "stability (emotion vectors, cosine)": {
                "split-half": _band(rows, "split_half"),
                "cross-domain": _band(rows, "cross_domain"),
                "vs first axis point": _band(rows, "cross_model_cosine"),
            },
            "selectivity (emotion vectors)": {
                "|M_ii| / Σ_j≠i |M_ij|": _band(rows, "selectivity"),
            },
            "style-vs-safety ratio": {
                "style effect / failure effect": _band(rows, "style_vs_safety"),
            },
            "policy": {
                "policy-dominance index (R²)": _band(rows, "policy_dominance"),
                "failure rate (unsteered)": _band(rows, "failure_rate"),
            },
        },
        path=os.path.join(workdir, "stability_modularity.png"),
        xlabel=xlabel,
        title=title,
        break_index=brk.index,
        logy=("style-vs-safety ratio",),
    )
    names = points[0]["matrix_rows"]
    plots.plot_matrices(
        np.stack([p["matrix"] for p in points]),
        names,
        labels,
        path=os.path.join(workdir, "cross_steering.png"),
    )
    summary = {
        "family": cfg.get("family", ""),
        "axis": b.axis,
        "labels": labels,
        "break_point": brk.to_json(),
        "thresholds": {
            "delta_mon": b.mon_threshold,
            "delta_steer": b.steer_threshold,
            "kappa": b.kappa,
        },  # fmt: skip
        "points": [p["detail"] for p in points],
        "seconds": seconds,
    }
    results.write_json(os.path.join(workdir, "summary.json"), summary)
    models = {r["label"]: r["source"] for r in rows if os.path.isdir(r["source"])}
    results.write_json(
        os.path.join(workdir, "config.json"),
        results.provenance(seed=cfg.seed, models=models, config=cfg,
                           extra={"axis_sources": {r["label"]: r["source"] for r in rows}}),
    )  # fmt: skip
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(report_markdown(cfg, rows, brk, seconds))
    return summary


def report_markdown(cfg, rows: list[dict], brk: BreakPoint, seconds: float) -> str:
    """The human-readable report of a run."""
    b = cfg.breakpoint
    zoo = str(cfg.get("family", "")).startswith("emojax zoo")
    lines = [f"# emojax break-point report: {cfg.get('family', '')}", ""]
    if zoo:
        lines += [
            "> These models are emojax's synthetic model organisms. Results on them validate "
            "the pipeline; they are not claims about real language models.",
            "",
        ]
    if brk.index is None:
        verdict = "**not reached** on this axis"
    else:
        verdict = f"at **{brk.label}** (axis index {brk.index})"
    n = len(rows)
    interval = [("not reached" if x >= n else rows[int(x)]["label"]) for x in brk.interval]
    lines += [
        "## Break point",
        "",
        f"Emotion-based monitoring and steering stop adding safety value over the "
        f"non-emotional controls {verdict}: from there on, the upper 95 % bounds of Δ_mon "
        f"(< {b.mon_threshold:g} AUROC) and Δ_steer (< {b.steer_threshold:g} failure rate at "
        f"KL budget κ = {b.kappa:g}) stay below their thresholds and neither interval lies "
        "above 0.",
        "",
        f"* bootstrap 95 % interval over prompts: {interval[0]} … {interval[1]} "
        f"(a break exists in {100 * brk.reached_fraction:.0f} % of resamples)",
        "* first point where both upper bounds dip below the thresholds: "
        + ("none" if brk.first_crossing is None else rows[brk.first_crossing]["label"]),
        "",
        "![incremental value](incremental_value.png)",
        "",
        "## Per axis point",
        "",
        markdown_table(rows),
        "",
        "PDI: policy-dominance index, R² of the refusal score explained by the control "
        "projections (harm-salience, caution, refusal). Δ_mon: out-of-fold AUROC of predicting "
        "the model's own failures from controls + emotion projections minus controls alone. "
        "Δ_steer: failure rate reachable by steering with controls alone minus controls plus "
        "the best emotion vector, at the KL budget. Selectivity and style/safety are medians "
        "/ means over the three emotion vectors.",
        "",
        "## Diagnostics (DESIGN.md §5)",
        "",
        "| point | " + " | ".join(name for _, name in DIAGNOSTICS) + " |",
        "|---|" + "---|" * len(DIAGNOSTICS),
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | "
            + " | ".join("yes" if r[k] else "no" for k, _ in DIAGNOSTICS)
            + " |"
        )
    lines += [
        "",
        "![stability and modularity](stability_modularity.png)",
        "",
        "![cross-steering matrices](cross_steering.png)",
        "",
        "## What was run",
        "",
        f"* axis: {b.axis}; points: " + ", ".join(f"`{r['label']}` ({r['source']})" for r in rows),
        f"* vectors: {cfg.sweep.method} at the residual stream; steering at layer "
        f"{rows[0]['sweep_layer']}; monitoring probes at residual site {rows[0]['probe_site']}",
        f"* dtype {cfg.dtype}, seed {cfg.seed}; wall time {seconds:.0f} s",
        "* per-prompt readouts: `points/<label>/sweep/readouts.npz`, "
        "`points/<label>/probes.npz`; provenance: `config.json`",
        "",
    ]
    return "\n".join(lines)
