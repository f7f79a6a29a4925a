"""Outputs of the break-point analysis: tables, plots, `summary.json` and `report.md`.

Written into the run's work directory, each file atomically (`emojax.results.atomic_write`),
in this order (`summary.json` last: its presence marks a complete run):
  points.csv          one row per axis point
  break_draws.npz     the request draws of every Δ behind the break-point interval
  incremental_value.png, stability_modularity.png, cross_steering.png
  config.json         resolved config + provenance (models and hashes, versions, commit, seed)
  report.md           what was run, the table, the break point, the diagnostics, the plots
  summary.json        the break point, thresholds, every axis point's row, config fingerprint
The per-point outputs (`points/<label>/`: vectors, stability tables, sweep readouts per
prompt, probes) and `run.json` (`emojax.workdir`) are written by `emojax.pipeline`.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

import numpy as np

from emojax import plots, results
from emojax.breakpoint import BreakPoint
from emojax.workdir import config_fingerprint

FAILURE_TYPES = ("harmful_compliance", "over_refusal")
TYPE_SHORT = {"harmful_compliance": "HC", "over_refusal": "OR"}

TABLE_COLUMNS = (
    ("label", "point", "{}"),
    ("policy_dominance", "PDI (R²)", "{:.2f}"),
    ("harmful_compliance_rate", "harmful compliance", "{:.2f}"),
    ("over_refusal_rate", "over-refusal", "{:.2f}"),
    ("delta_mon_harmful_compliance_value", "Δ_mon HC [95% CI] (null p)", "{}"),
    ("delta_mon_over_refusal_value", "Δ_mon OR [95% CI] (null p)", "{}"),
    ("delta_steer_harmful_compliance_value", "Δ_steer HC [95% CI] (null p)", "{}"),
    ("delta_steer_over_refusal_value", "Δ_steer OR [95% CI] (null p)", "{}"),
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
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for row in rows:
        w.writerow({k: _cell(row.get(k)) for k in cols})
    results.write_text(path, buf.getvalue())


def _cell(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        return f"{float(x):.6g}"
    return x


def _fmt(row: dict, key: str, spec: str) -> str:
    if key.endswith("_value"):
        base = key[: -len("_value")]
        if not row.get(base + "_estimable"):
            bad, ok = row.get(base + "_failing_requests"), row.get(base + "_ok_requests")
            return f"not estimable ({bad} failing / {ok} non-failing requests)"
        return (
            f"{row[base]:+.3f} [{row[base + '_lo']:+.3f}, {row[base + '_hi']:+.3f}] "
            f"(p={row[base + '_null_p']:.2f})"
        )
    if key == "style_vs_safety" and not row.get("style_vs_safety_defined", True):
        return "not defined"
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
    deltas: dict[str, dict],
    margins: dict[str, float],
    brk: BreakPoint,
    seconds: float,
    data_files: dict[str, dict] | None = None,
) -> dict:
    """Writes every axis-level output, `summary.json` last; returns the summary dict.

    Args:
      cfg: the run's config.
      workdir: output directory.
      points: per axis point: `row`, `detail`, `matrix`, `matrix_rows`.
      deltas: per Δ name ("delta_mon/harmful_compliance", ...): estimate, lo, hi [P],
        samples [P, R] (the shared request draws), estimable [P].
      margins: the equivalence margins of the break rule.
      brk: the break point.
      seconds: wall time of the analysis.
      data_files: the dataset files read (`emojax.concepts.data_files`): into `config.json`
        with their hashes, and listed in the report.
    """
    b = cfg.breakpoint
    rows = [p["row"] for p in points]
    labels = [r["label"] for r in rows]
    write_csv(os.path.join(workdir, "points.csv"), rows)
    results.save_arrays(os.path.join(workdir, "break_draws.npz"), {
        name.replace("/", "__"): d["samples"] for name, d in deltas.items()
    })  # fmt: skip
    xlabel = "policy dominance →  (" + ("weight dial α" if b.axis == "dial" else "model") + ")"
    title = f"{cfg.get('family', '')}"
    values = {}
    for name, d in deltas.items():
        key = name.replace("/", "_")
        values[name] = {
            "est": d["estimate"], "lo": d["lo"], "hi": d["hi"], "estimable": d["estimable"],
            "null_lo": [np.nan if r[f"{key}_null_q05"] is None else r[f"{key}_null_q05"]
                        for r in rows],
            "null_hi": [np.nan if r[f"{key}_null_q95"] is None else r[f"{key}_null_q95"]
                        for r in rows],
        }  # fmt: skip
    plots.plot_incremental_value(
        labels,
        values,
        margins=margins,
        break_index=brk.index,
        break_interval=tuple(brk.interval_index) if brk.index is not None else None,
        outcome=brk.outcome,
        path=os.path.join(workdir, "incremental_value.png"),
        xlabel=xlabel,
        title=title,
    )
    plots.plot_curves(
        labels,
        {
            "stability (emotion vectors, cosine)": {
                "split-half (templates)": _band(rows, "split_half"),
                "cross-domain": _band(rows, "cross_domain"),
                "vs first axis point": _band(rows, "cross_model_cosine"),
            },
            "selectivity (emotion vectors)": {
                "|M_ii| / mean_j≠i |M_ij|": _band(rows, "selectivity"),
            },
            "style-vs-safety ratio": {
                "|style effect| / |safety effect| (where defined)": _band(rows, "style_vs_safety"),
            },
            "policy": {
                "policy-dominance index (R²)": _band(rows, "policy_dominance"),
                "harmful compliance (unsteered)": _band(rows, "harmful_compliance_rate"),
                "over-refusal (unsteered)": _band(rows, "over_refusal_rate"),
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
    fingerprint = config_fingerprint(cfg)
    models = {r["label"]: r["source"] for r in rows if os.path.isdir(r["source"])}
    results.write_json(
        os.path.join(workdir, "config.json"),
        results.provenance(seed=cfg.seed, models=models, config=cfg,
                           extra={"axis_sources": {r["label"]: r["source"] for r in rows},
                                  "data_files": data_files or {},
                                  "config_fingerprint": fingerprint}),
    )  # fmt: skip
    results.write_text(
        os.path.join(workdir, "report.md"),
        report_markdown(cfg, rows, brk, margins, seconds, data_files),
    )
    summary = {
        "family": cfg.get("family", ""),
        "axis": b.axis,
        "labels": labels,
        "break_point": brk.to_json(),
        "margins": dict(margins),
        "kappa": b.kappa,
        "min_failures": b.min_failures,
        "points": [p["detail"] for p in points],
        "seconds": seconds,
        "config_fingerprint": fingerprint,
    }
    results.write_json(os.path.join(workdir, "summary.json"), summary)  # last: run complete
    return summary


def break_sentence(brk: BreakPoint, margins: dict[str, float], kappa: float) -> str:
    """One paragraph: the break rule's outcome, in words, with what it rests on."""
    share = lambda x: f"{100 * x:.1f} %"
    types = "; ".join(
        f"{t.replace('_', ' ')}: {v['outcome']}" + (f" at {v['label']}" if v["label"] else "")
        for t, v in brk.per_type.items()
    )
    rule = (
        f"every required Δ ({', '.join(brk.required)}) is vanished (upper 95 % bound below its "
        f"margin) or its failures are eliminated (rate's upper bound below {brk.floor:g}); "
        f"Δ_steer read at KL budget κ = {kappa:g}"
    )
    tail = (
        f" Per failure type: {types}. 95 % interval (request bootstrap, same rule): "
        f"{brk.interval[0]} … {brk.interval[1]}; a break in {share(brk.reached_fraction)} of "
        f"resamples."
    )
    if brk.outcome == "break":
        return (
            f"Emotion-based monitoring and steering stop adding safety value over the "
            f"non-emotional controls at **{brk.label}**: from there on, {rule}." + tail
        )
    if brk.outcome == "failures eliminated first":
        return (
            f"**Failures eliminated first** (at {brk.label}): the policy removed the failures "
            "before emotion value was shown to vanish." + tail
        )
    if brk.outcome == "insufficient data":
        return (
            "**Insufficient data**: a required Δ is undetermined (not estimable, or its "
            "interval straddles the margin) where the rule needs it, so no break and no "
            "'not reached' can be stated." + tail
        )
    return (
        "**Not reached** on this axis: at the last point a required Δ is still present (its "
        "interval excludes 0 and its upper bound is not below the margin)." + tail
    )


def data_line(data_files: dict[str, dict] | None) -> str:
    """The report's line on the dataset files: the user's ones by name and hash."""
    user = {k: v for k, v in (data_files or {}).items() if not v["shipped"]}
    if not user:
        return "* data: the shipped datasets (`emojax/concepts/data/`)"
    files = ", ".join(
        f"`{k}` ← `{v['path']}` (sha256 {v['sha256'][:12]}…)" for k, v in user.items()
    )
    return f"* data: {files}; every other file shipped; hashes of all in `config.json`"


def report_markdown(
    cfg, rows: list[dict], brk: BreakPoint, margins, seconds: float, data_files=None
) -> str:
    """The human-readable report of a run (`data_files`: see `data_line`)."""
    b = cfg.breakpoint
    zoo = str(cfg.get("family", "")).startswith("emojax zoo")
    lines = [f"# emojax break-point report: {cfg.get('family', '')}", ""]
    if zoo:
        scenario = cfg.zoo.get("scenario", "vanishing")
        lines += [
            "> These models are emojax's synthetic model organisms. Results on them validate "
            "the pipeline; they are not claims about real language models. The zoo's break "
            f"is planted by design (scenario `{scenario}`).",
            "",
        ]
    power = []
    for r in rows:
        cells = []
        for stat in ("delta_mon", "delta_steer"):
            for t in FAILURE_TYPES:
                m = r.get(f"{stat}_{t}_min_margin")
                cells.append("–" if m is None else f"{m:.3f}")
        power.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines += [
        "## Break point",
        "",
        break_sentence(brk, margins, b.kappa),
        "",
        "![incremental value](incremental_value.png)",
        "",
        "## Per axis point",
        "",
        markdown_table(rows),
        "",
        "PDI: policy-dominance index, R² of the refusal score explained by the control "
        "projections (harm-salience, caution, refusal). HC: harmful compliance (harmful "
        "requests answered), OR: over-refusal (harmless or borderline requests refused); the "
        "two are measured, monitored and steered separately. Δ_mon: out-of-fold AUROC of "
        "predicting the model's own failures of that type from controls (harm-salience, "
        "caution, refusal projections, policy logit) + emotion projections minus controls "
        "alone; folds grouped by request. Δ_steer: held-out failure rate reachable by the "
        "controls arm (refusal x harm-salience, refusal x caution) minus that reachable by the "
        "emotion arm (refusal x each emotion) at the KL budget, best cell chosen on other "
        "requests (cross-fitted); it can be negative. Intervals: cluster bootstrap over "
        "requests, centred on the estimate, paired across points. null p: share of "
        "random-direction arms (norm-matched, same grid shape) at least as large. "
        f"A failure type with fewer than {b.min_failures} failing requests is not estimable. "
        "Style/safety: |style effect| / |safety effect|, defined only where the safety "
        "effect's interval excludes 0.",
        "",
        "### Power: the smallest margin each point's data can confirm",
        "",
        "Upper 95 % half-width of each Δ (a true Δ of 0 would be confirmed below any margin "
        "larger than this).",
        "",
        "| point | Δ_mon HC | Δ_mon OR | Δ_steer HC | Δ_steer OR |",
        "|---|---|---|---|---|",
        *power,
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
        data_line(data_files),
        "* per-prompt readouts: `points/<label>/sweep/readouts.npz`, "
        "`points/<label>/probes.npz`; provenance: `config.json`",
        "",
    ]
    return "\n".join(lines)
