"""The break-point run: claim the work directory, check, analyse every point, find the break."""

from __future__ import annotations

import functools
import os
import time

import jax
import numpy as np
from absl import logging

from emojax import breakpoint as bp
from emojax import results, sharding
from emojax.pipeline import known_answers
from emojax.pipeline.axis import axis_checkpoints, axis_points, preflight
from emojax.pipeline.evalset import FAILURE_TYPES, data_files, evaluation_set, shared_draws
from emojax.pipeline.point import analyse_point, point_values, preflight_point
from emojax.pipeline.power import margin_of, scale_of
from emojax.pipeline.progress import Progress
from emojax.report import write_outputs
from emojax.workdir import claim_workdir, start_run


def value_names(cfg) -> list[str]:
    """The incremental values of a run: Δ_mon and Δ_steer per failure type."""
    return [f"{s}/{t}" for s in ("delta_mon", "delta_steer") for t in FAILURE_TYPES]


def required_names(cfg) -> list[str]:
    """`breakpoint.required` (default: every value of `value_names`), checked."""
    names = value_names(cfg)
    required = list(cfg.breakpoint.get("required") or names)
    unknown = [k for k in required if k not in names]
    if unknown:
        raise ValueError(f"breakpoint.required: unknown {unknown}; known: {names}")
    return required


def break_inputs(points: list[dict], cfg) -> tuple[dict, dict, dict]:
    """The break rule's inputs from the points: Δs on the rule's scales, margins, failure rates.

    Returns:
      (deltas, margins, failure_rates) for `emojax.breakpoint.find_break_point`.
    """
    deltas = {}
    for name in value_names(cfg):
        stat = name.split("/")[0]
        scale = scale_of(cfg, stat)
        vals = [p["values"][name] for p in points]
        col = lambda f, vals=vals, scale=scale: np.array([v[scale][f] for v in vals], np.float64)
        deltas[name] = {
            "estimate": col("estimate"), "lo": col("lo"), "hi": col("hi"),
            "samples": np.stack([v[scale]["samples"] for v in vals]),
            "estimable": np.array([v["estimable"] for v in vals]),
            "estimable_draws": np.stack([v["estimable_draws"] for v in vals]),
            "scale": scale,
        }  # fmt: skip
    margins = {s: margin_of(cfg, s) for s in ("delta_mon", "delta_steer")}
    rates = {
        t: {f: np.stack([np.asarray(p["rates"][t][f]) for p in points]) for f in
            ("estimate", "hi", "samples")}
        for t in FAILURE_TYPES
    }  # fmt: skip
    return deltas, margins, rates


def run(cfg, workdir: str, *, overwrite: bool = False) -> dict:
    """Runs the analysis at every axis point and finds the break point.

    Nothing is written before three checks pass: the work directory holds nothing or this
    config's outputs (`emojax.workdir`: then the run resumes), the data files are valid and
    every axis point's checkpoint is (`preflight`).

    Args:
      cfg: the resolved config.
      workdir: the output directory.
      overwrite: a directory holding another config's outputs is used anyway, its old
        outputs moved into `<workdir>/previous-<timestamp>/`; otherwise such a directory is
        refused (`emojax.workdir.WorkdirError`, naming the differing keys).

    Returns:
      The summary dict (also written to `<workdir>/summary.json` by `emojax.report`).
    """
    required_names(cfg)  # a mistyped required Δ fails before anything is written
    state = claim_workdir(cfg, workdir, overwrite=overwrite)  # read-only: nothing written yet
    files = data_files(cfg)  # validates the user's data first; recorded in config.json
    paths = preflight(cfg)  # every checkpoint, before any work
    if sharding.is_writer():
        previous = start_run(state)  # the first write: run.json
        if previous:
            logging.info("moved the old outputs of %s aside into %s", workdir, previous)
        logging.info("work directory %s (%s, config %s)", workdir, state.action,
                     state.fingerprint)  # fmt: skip
    sharding.sync("workdir claimed")
    b = cfg.breakpoint
    num_points = len(axis_checkpoints(cfg)[0])
    progress = Progress(num_points, "axis points")
    rng = jax.random.key(cfg.seed)
    evalset = evaluation_set(cfg)
    draws = shared_draws(evalset, b.num_bootstrap, cfg.seed)
    known = known_answers.plan(cfg, evalset, num_points)
    if known is not None:  # the estimate reads its split; the arms and truths the others
        logging.info("validation scenario %s: schedule %s; requests per split %s",
                     known.scenario, known.schedule, known.splits.sizes())  # fmt: skip
        evalset = known.splits.estimate
    logging.info("evaluation set: %d prompts of %d requests", len(evalset.items),
                 evalset.num_requests)  # fmt: skip
    points, reference, truths = [], None, []
    t_start = time.perf_counter()
    if b.get("preflight_only", False):
        return _preflight_only(cfg, workdir, paths, evalset, draws)
    for i, point in enumerate(axis_points(cfg, paths)):
        logging.info("axis point %d/%d: %s (%s)", i + 1, num_points, point.label, point.source)
        arm = None
        if known is not None:
            arm = functools.partial(known_answers.arm, known, i, cfg=cfg)
        result = analyse_point(
            point, cfg, workdir, jax.random.fold_in(rng, i), reference, evalset, draws,
            validation_arm=arm,
        )  # fmt: skip
        if reference is None:
            reference = {"captured": result["captured"], "label": point.label}
        result.pop("captured")
        arm_vectors = result.pop("arm")
        if known is not None:  # the same estimator on the (larger) truth split, no draws
            values = point_values(point, arm_vectors, known.splits.truth, None,
                                  known_answers.truth_config(cfg), None)  # fmt: skip
            truths.append(known_answers.truth_of(values))
        points.append(result)
        r = result["row"]
        progress.step(f"{point.label}: " + ", ".join(
            f"{n} {_short(r, n)}" for n in value_names(cfg)))  # fmt: skip
    labels = [p["row"]["label"] for p in points]
    deltas, margins, rates = break_inputs(points, cfg)
    brk = bp.find_break_point(labels, deltas, margins, required=required_names(cfg),
                              failure_rates=rates, floor=float(b.failure_floor))  # fmt: skip
    for i, p in enumerate(points):  # the statuses join each point's row
        for name, st in brk.status.items():
            p["row"][name.replace("/", "_") + "_status"] = st[i]
    planted = None
    if known is not None:
        planted = known_answers.summary(known, labels, truths, deltas, brk, margins, cfg)
        logging.info("validation: planted %s, recovered %s", planted["planted"]["outcome"],
                     brk.outcome)  # fmt: skip
    seconds = time.perf_counter() - t_start
    if not sharding.is_writer():  # multi-host: process 0 writes the axis-level outputs
        return {"break_point": brk.to_json(), "labels": labels}
    return write_outputs(
        cfg, workdir, points, deltas, margins, brk, seconds, data_files=files, checkpoints=paths,
        validation=planted,
    )  # fmt: skip


def _preflight_only(cfg, workdir: str, paths, evalset, draws) -> dict:
    """`breakpoint.preflight_only`: each point's behaviour and power preflight, no sweep.

    Writes `points/<label>/preflight.json` and `preflight.json` (every point); returns it.
    """
    out = []
    for point in axis_points(cfg, paths):
        folder = os.path.join(workdir, "points", point.label.replace("/", "_"))
        os.makedirs(folder, exist_ok=True)
        out.append(preflight_point(point, cfg, evalset, draws, folder))
    summary = {"preflight_only": True, "points": out, "required": required_names(cfg)}
    if sharding.is_writer():
        results.write_json(os.path.join(workdir, "preflight.json"), summary)
    return summary


def preflight_table(summary: dict) -> str:
    """The preflight of every point as a Markdown table: smallest confirmable margin per Δ
    (required ones marked *), with the failure rates and steered strata behind it."""
    names = list(summary["points"][0]["power_preflight"]) if summary["points"] else []
    req = set(summary.get("required", ()))
    head = ["point", "HC rate", "OR rate", "steered HC (fail/ok)", "steered OR (fail/ok)"]
    head += [n.replace("delta_", "Δ_") + ("*" if n in req else "") for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in summary["points"]:
        r, st = p["failure_rates"], p["steered"]
        cells = [p["label"], *(f"{r[t]['estimate']:.3f}" for t in FAILURE_TYPES)]
        cells += [f"{st[t]['failing'][0]}/{st[t]['ok'][0]}" for t in FAILURE_TYPES]
        for n in names:
            v = p["power_preflight"][n]
            mark = "" if v["powered"] else " (> margin)"
            cells.append(f"{v['smallest_margin']:.3g}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    m = summary["points"][0]["power_preflight"][names[0]] if names else None
    if m is not None:
        lines.append(f"\nmargins on the {m['scale']} scale; * required")
    return "\n".join(lines)


def _short(row: dict, name: str) -> str:
    key = name.replace("/", "_")
    if not row[f"{key}_estimable"]:
        return "not estimable"
    rel = "" if row[key + "_rel"] is None else f", rel {row[key + '_rel']:+.2f}"
    return f"{row[key]:+.3f} [{row[key + '_lo']:+.3f}, {row[key + '_hi']:+.3f}]{rel}"
