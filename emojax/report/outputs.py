"""The run's outputs: the CSV writer, every axis-level file in order, and report.md."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emojax import results
from emojax.breakpoint import BreakPoint
from emojax.report.answer import break_sentence, caveats, headline
from emojax.report.figures import min_denominator, write_figures
from emojax.report.provenance import (
    axis_checkpoints,
    command_line,
    device_name,
    hashes_text,
    safety_section,
)
from emojax.report.tables import (
    DIAGNOSTICS,
    data_line,
    examples_section,
    failure_table,
    markdown_table,
    value_table,
)
from emojax.report.words import rule_scale
from emojax.workdir import config_fingerprint


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


def write_outputs(
    cfg,
    workdir: str,
    points: list[dict],
    deltas: dict[str, dict],
    margins: dict[str, float],
    brk: BreakPoint,
    seconds: float,
    data_files: dict[str, dict] | None = None,
    checkpoints: Mapping[str, str] | None = None,
    validation: Mapping[str, Any] | None = None,
) -> dict:
    """Writes every axis-level output, `summary.json` last; returns the summary dict.

    Args:
      cfg: the run's config.
      workdir: output directory.
      points: per axis point: `row`, `detail`, `matrix`, `matrix_rows` (and, from the
        pipeline, `matrix_cols`, `values`, `rates`, `examples`).
      deltas: per Δ name ("delta_mon/harmful_compliance", ...), on the rule's scale:
        estimate, lo, hi [P], samples [P, R] (the shared request draws), estimable [P].
      margins: the equivalence margins of the break rule.
      brk: the break point.
      seconds: wall time of the analysis.
      data_files: the dataset files read (`emojax.concepts.data_files`): into `config.json`
        with their hashes, and listed in the report.
      checkpoints: checkpoint name -> resolved path (`emojax.pipeline.preflight`); found
        from the rows and the config when None (`axis_checkpoints`).
      validation: the known-answer section of a run with validation arms
        (`emojax.pipeline.known_answers.summary`): into `summary.json` and the report.
    """
    b = cfg.breakpoint
    rows = [p["row"] for p in points]
    labels = [r["label"] for r in rows]
    write_csv(os.path.join(workdir, "points.csv"), rows)
    results.save_arrays(os.path.join(workdir, "break_draws.npz"), {
        name.replace("/", "__"): d["samples"] for name, d in deltas.items()
    })  # fmt: skip
    write_figures(cfg, workdir, points, deltas, margins, brk)
    fingerprint = config_fingerprint(cfg)
    ckpts = axis_checkpoints(cfg, rows, checkpoints)
    device, command = device_name(), command_line()
    prov = results.provenance(
        seed=cfg.seed, models={k: c["path"] for k, c in ckpts.items()}, config=cfg,
        extra={"axis_sources": {r["label"]: r["source"] for r in rows},
               "axis_checkpoints": ckpts, "device": device, "command": command,
               "data_files": data_files or {}, "config_fingerprint": fingerprint},
    )  # fmt: skip
    results.write_json(os.path.join(workdir, "config.json"), prov)
    results.write_text(
        os.path.join(workdir, "report.md"),
        report_markdown(cfg, rows, brk, margins, seconds, data_files,
                        examples=[p.get("examples") for p in points], provenance=prov,
                        validation=validation),
    )  # fmt: skip
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
    if validation is not None:
        summary["validation"] = dict(validation)
    results.write_json(os.path.join(workdir, "summary.json"), summary)  # last: run complete
    return summary


def known_answer_lines(validation: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
    """The report's known-answer section: what was planted, what was recovered, coverage."""
    planted, rec = validation["planted"], validation["recovered"]
    at = lambda x: f" at {x['label']}" if x.get("label") else ""
    verdict = "recovered" if validation["recovered_matches_planted"] else "NOT recovered"
    lines = [
        "### Known answer (validation arms)",
        "",
        f"Scenario `{validation['scenario']}`: the emotion entries are validation arms "
        "(placebo or spiked, `emojax.validation`), so this run measures the estimator, not the "
        f"emotions. Planted (the rule on truths measured on the truth split): "
        f"**{planted['outcome']}{at(planted)}**; recovered: **{rec['outcome']}{at(rec)}** "
        f"({verdict}). Schedule (λ per point, or placebo): "
        + ", ".join(f"{lab} {x}" for lab, x in zip(labels, validation["schedule"], strict=True))
        + f". Requests per split: {validation['splits']}.",
        "",
        "| Δ | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name, truth in validation["truth"].items():
        cov = validation["covered"][name]
        cells = []
        for t, c in zip(truth, cov, strict=True):
            rel = t.get("relative")
            val = "–" if rel is None or not np.isfinite(rel) else f"{rel:+.3f}"
            cells.append(val + ("" if c is None else " ✓" if c else " ✗"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Truths on the relative scale; ✓ / ✗: the estimate's 95 % interval covers "
              "the truth or not.", ""]  # fmt: skip
    return lines


def report_markdown(
    cfg,
    rows: list[dict],
    brk: BreakPoint,
    margins,
    seconds: float,
    data_files=None,
    *,
    examples: Sequence[Mapping | None] | None = None,
    provenance: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
) -> str:
    """The human-readable report of a run.

    Args:
      cfg: the run's config.
      rows: the points.csv rows.
      brk: the break point.
      margins: the margins of the rule.
      seconds: wall time.
      data_files: see `data_line`.
      examples: per point, failure type -> example generations (`emojax.pipeline.examples`).
      provenance: the `config.json` record (`results.provenance` with `axis_checkpoints`,
        `device`, `command` in it); made here when None.
      validation: the known-answer section (`emojax.pipeline.known_answers.summary`).
    """
    b = cfg.breakpoint
    labels = [r["label"] for r in rows]
    zoo = str(cfg.get("family", "")).startswith("emojax zoo")
    if provenance is None:
        ckpts = axis_checkpoints(cfg, rows)
        provenance = results.provenance(
            seed=cfg.seed, models={k: c["path"] for k, c in ckpts.items()},
            extra={"axis_checkpoints": ckpts, "device": device_name(), "command": command_line()},
        )  # fmt: skip
    ckpts = provenance.get("axis_checkpoints", {})
    hashes = provenance.get("models", {})
    lines = [
        f"# emojax break-point report: {cfg.get('family', '')}",
        "",
        headline(brk, labels, rows),
        "",
        *(f"> * {c}" for c in caveats(cfg, brk, rows, zoo)),
        "",
        "## Break point",
        "",
        break_sentence(brk, margins, b.kappa),
        "",
        *(known_answer_lines(validation, labels) if validation else []),
        "![incremental value](incremental_value.png)",
        "",
        "## Per axis point",
        "",
        "### Failures of the unsteered model",
        "",
        failure_table(rows),
        "",
        "Failing requests: distinct requests with a failing prompt (cue variants of one request "
        "are one request). Rates over prompts, cluster-bootstrap 95 % intervals over requests. "
        "Steered: the requests of the steering sweep, stratified by unsteered outcome and "
        "reweighted to the point.",
        "",
        "### Incremental values and their statuses",
        "",
        value_table(rows, brk, cfg),
        "",
        "Status (the break rule, DESIGN.md §5): vanished (upper 95 % bound below the margin), "
        "present (interval above 0, not vanished), failures eliminated (the type's failure "
        f"rate's upper bound below {brk.floor:g}), undetermined (not estimable, or the "
        "interval straddles the margin). Rule scale: "
        + "; ".join(f"{s.replace('delta_', 'Δ_')} {rule_scale(cfg, s)}, margin "
                    f"{float(margins[s]):g}" for s in ("delta_mon", "delta_steer"))
        + ". Relative Δ_steer: the share of the point's failures the emotion arm fixes beyond "
        "the controls arm; relative Δ_mon: ΔAUROC / (1 − AUROC(controls)); each denominator "
        f"held at a floor (Δ_mon {min_denominator(cfg, 'delta_mon'):g}, Δ_steer "
        f"{min_denominator(cfg, 'delta_steer'):g}), below which the scale is absolute in its "
        "units. Δ_mon: out-of-fold "
        "AUROC of predicting the model's own failures from controls (harm-salience, caution, "
        "refusal projections, policy logit) + emotion projections minus controls alone, folds "
        "grouped by request. Δ_steer: cross-fitted failure rate reachable by the controls arm "
        "minus the emotion arm's at KL budget κ "
        f"= {b.kappa:g}. null p: share of random-direction arms at least as large. Realised "
        "power: the upper half-width (the smallest margin the data confirm for a Δ of 0); "
        "preflight power: the same predicted from the unsteered failure counts before the "
        "sweep (✗: above the margin, or no failures to count). A Δ needs "
        f"{b.min_failures} failing requests (Δ_mon also {b.min_failures} non-failing ones) to "
        "be estimable.",
        "",
        "### Stability and modularity",
        "",
        markdown_table(rows),
        "",
        "PDI: policy-dominance index, R² of the refusal score explained by the control "
        "projections. Selectivity: |M_ii| / mean_{j≠i} |M_ij| of the emotion vectors, with "
        "the median null p of norm-matched random directions. Style/safety: |style effect| / "
        "|safety effect|, defined only where the safety effect's interval excludes 0.",
        "",
        "![stability and modularity](stability_modularity.png)",
        "",
        "![cross-steering matrices](cross_steering.png)",
        "",
        "### Diagnostics (DESIGN.md §5)",
        "",
        "| point | " + " | ".join(name for _, name in DIAGNOSTICS) + " |",
        "|---|" + "---|" * len(DIAGNOSTICS),
        *(f"| {r['label']} | " + " | ".join("yes" if r.get(k) else "no" for k, _ in DIAGNOSTICS)
          + " |" for r in rows),
        "",
        "## Models on the axis",
        "",
        *safety_section(ckpts),
        "## Example generations",
        "",
        "Up to three failing requests per failure type and point: the unsteered response and "
        "the response at the emotion arm's most-chosen steering cell (greedy).",
        "",
        *examples_section(labels, examples or [None] * len(rows)),
        "## What was run",
        "",
        f"* command: `{provenance.get('command', command_line())}`",
        f"* commit: `{provenance.get('git_commit')}`",
        f"* device: {provenance.get('device', device_name())}",
        "* versions: " + ", ".join(f"{k} {v}" for k, v in provenance.get("versions", {}).items()),
        f"* axis: {b.axis}; points: " + ", ".join(f"`{lab}`" for lab in labels),
        f"* vectors: {cfg.sweep.method} at the residual stream; steering at layer "
        f"{rows[0].get('sweep_layer')}; monitoring probes at residual site "
        f"{rows[0].get('probe_site')}",
        f"* dtype {cfg.dtype}, seed {cfg.seed}; wall time {seconds:.0f} s",
        data_line(data_files),
        "* per-prompt readouts: `points/<label>/sweep/readouts.npz`, "
        "`points/<label>/probes.npz`; provenance: `config.json`",
        "",
        "Checkpoints (sha256, first 16 hex digits):",
        "",
        "| checkpoint | role | path | sha256 |",
        "|---|---|---|---|",
        *(f"| `{c['name']}` | {c['role']} | `{c['path']}` | "
          f"{hashes_text(hashes.get(k, {}).get('sha256', {}))} |" for k, c in ckpts.items()),
        "",
    ]  # fmt: skip
    return "\n".join(lines)
