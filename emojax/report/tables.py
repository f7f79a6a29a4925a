"""The tables of report.md: failures, incremental values and statuses, stability and
modularity, diagnostics' columns, example generations, the data line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from emojax.breakpoint import BreakPoint
from emojax.report.words import (
    FAILURE_TYPES,
    delta_name,
    finite,
    interval,
    md_cell,
    num,
    rule_scale,
)

TABLE_COLUMNS = (
    ("label", "point", "{}"),
    ("policy_dominance", "PDI (R²)", "{:.2f}"),
    ("split_half", "split-half cos", "{:.2f}"),
    ("cross_domain", "cross-domain cos", "{:.2f}"),
    ("cross_model_cosine", "cos vs first point", "{:.2f}"),
    ("selectivity", "selectivity (null p)", "{:.2f}"),
    ("offtarget_kl_per_unit_effect", "off-target KL / effect", "{:.3g}"),
    ("style_vs_safety", "style/safety", "{:.2f}"),
)
DIAGNOSTICS = (
    ("diag_failures_controlled_by_policy", "failures already controlled by policy + controls"),
    ("diag_emotion_mostly_stylistic", "emotion interventions mostly stylistic"),
    ("diag_low_alignment_and_selectivity", "low cross-model alignment and low selectivity"),
)


def _fmt(row: dict, key: str, spec: str) -> str:
    if key == "style_vs_safety" and not row.get("style_vs_safety_defined", True):
        return "not defined"
    value = row.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    text = spec.format(value)
    if key == "selectivity" and finite(row.get("selectivity_null_p")):
        text += f" ({row['selectivity_null_p']:.2f})"
    return text


def markdown_table(rows: list[dict]) -> str:
    """The stability and modularity table of report.md (one row per axis point)."""
    head = "| " + " | ".join(name for _, name, _ in TABLE_COLUMNS) + " |"
    sep = "|" + "---|" * len(TABLE_COLUMNS)
    body = ["| " + " | ".join(_fmt(r, k, s) for k, _, s in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def failure_table(rows: Sequence[Mapping]) -> str:
    """Per point and failure type: failing requests, the unsteered rate [95 % CI], and the
    steered sample's failing / non-failing requests."""
    head = ["point"]
    for t in FAILURE_TYPES:
        n = t.replace("_", " ")
        head += [f"{n}: failing requests", f"{n}: rate [95 % CI]", f"{n}: steered fail / ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["label"])]
        for t in FAILURE_TYPES:
            cells += [
                num(r.get(f"{t}_failing_requests"), "{}"),
                interval(r.get(f"{t}_rate"), r.get(f"{t}_rate_lo"), r.get(f"{t}_rate_hi"),
                          "{:.2f}"),
                f"{num(r.get(f'{t}_steered_failing'), '{}')} / "
                f"{num(r.get(f'{t}_steered_ok'), '{}')}",
            ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def value_table(rows: Sequence[Mapping], brk: BreakPoint, cfg) -> str:
    """One row per (Δ, point): status, the rule's scale and the absolute one, null, power."""
    head = ("Δ", "point", "status", "rule scale [95 % CI]", "absolute [95 % CI]", "null p",
            "failing / ok requests", "realised power", "preflight power")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in brk.status:
        key = name.replace("/", "_")
        rel = rule_scale(cfg, name.split("/")[0]) == "relative"
        suffix = "_rel" if rel else ""
        margin = brk.margins[name]
        need = "" if name in brk.required else " (not required)"
        for i, r in enumerate(rows):
            st = brk.status[name][i]
            ok = bool(r.get(f"{key}_estimable"))
            rule = (interval(r.get(key + suffix), r.get(f"{key}{suffix}_lo"),
                              r.get(f"{key}{suffix}_hi")) if ok else "not estimable")  # fmt: skip
            absolute = interval(r.get(key), r.get(f"{key}_lo"), r.get(f"{key}_hi")) if ok else "–"
            power = r.get(f"{key}_power")
            flag = "" if finite(power) and power <= margin else " ✗"
            lines.append(
                f"| {delta_name(name)}{need} | {r['label']} | {st} | {rule} | {absolute} | "
                f"{num(r.get(f'{key}_null_p'), '{:.2f}')} | "
                f"{num(r.get(f'{key}_failing_requests'), '{}')} / "
                f"{num(r.get(f'{key}_ok_requests'), '{}')} | "
                f"{num(r.get(f'{key}_min_margin'))} | {num(power)}{flag} |"
            )
    return "\n".join(lines)


def examples_section(labels: Sequence[str], examples: Sequence[Mapping | None]) -> list[str]:
    """Up to three failing requests per failure type and point: unsteered and best-steered."""
    out = []
    for t in FAILURE_TYPES:
        out += [f"### {t.replace('_', ' ')}", ""]
        body = []
        for label, ex in zip(labels, examples, strict=True):
            for e in (ex or {}).get(t, [])[:3]:
                steered = e.get("steered")
                how = e.get("steering")
                body.append(
                    f"| {label} | {md_cell(e['prompt'])} | {md_cell(e['unsteered'])} | "
                    + (f"{md_cell(steered)} | {md_cell(how, 80)} |" if steered is not None
                       else "– (no emotion cell: Δ_steer not estimable) | – |")
                )  # fmt: skip
        if body:
            out += ["| point | request | unsteered | best-steered (emotion arm) | steering |",
                    "|---|---|---|---|---|", *body, ""]  # fmt: skip
        else:
            out += ["No failing request of this type at any point.", ""]
    return out


def data_line(data_files: dict[str, dict] | None) -> str:
    """The report's line on the dataset files: the user's ones by name and hash."""
    user = {k: v for k, v in (data_files or {}).items() if not v["shipped"]}
    if not user:
        return "* data: the shipped datasets (`emojax/concepts/data/`)"
    files = ", ".join(
        f"`{k}` ← `{v['path']}` (sha256 {v['sha256'][:12]}…)" for k, v in user.items()
    )
    return f"* data: {files}; every other file shipped; hashes of all in `config.json`"
