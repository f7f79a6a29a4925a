"""The known-answer study: over seeds, plant each scenario with validation arms, measure the
truths, run the estimator, and compare.

Dimension legend: S seeds, P axis points, A arms (the spiked arms at each λ of `lams`, and the
placebo), R bootstrap draws.

Per seed (a request split and the random parts of the arms) and axis point: the spike
directions are learned on the learning split; every arm of the point (λ in `lams`, and the
placebo) is measured twice with the pipeline's own estimator
(`emojax.pipeline.point.point_values`): on the estimate split with the run's shared draws
(estimates and intervals) and on the truth split without draws (the measured truth, several
times more requests). Every scenario is then a choice of one arm per point (its schedule), so
all four scenarios come from the same measurements: the planted outcome is the break rule on
the chosen arms' truths (`truth.planted_outcome`), the recovered outcome the rule on their
estimates (`emojax.pipeline.break_inputs` + `find_break_point`, as the pipeline does).

Reported (`markdown_table`): per scenario, the planted and recovered outcomes and how often
they agree; the coverage of the truths by the estimates' intervals, per Δ on the rule's scale;
Δ against λ (truth and estimate means). A truth measured on k times the estimate's requests
has its own noise, so even an exact 95 % interval covers it in only about
P(|Z| < 1.96 / sqrt(1 + 1/k)) of seeds (91.5 % at k = 3).

This module runs the pipeline, so it sits above it (the pipeline layer), unlike the rest of
`emojax.validation`.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging

from emojax import breakpoint as bp
from emojax import extract
from emojax.pipeline import (
    FAILURE_TYPES,
    axis_points,
    break_inputs,
    evaluation_set,
    point_values,
    preflight,
    required_names,
    shared_draws,
    value_names,
)
from emojax.pipeline.known_answers import learn_spikes, truth_config
from emojax.pipeline.power import margin_of, scale_of
from emojax.validation import arms, schedules, splits, truth

PLANTED = ("vanishing", "persistent", "early", "null")
PLACEBO_ARM = "placebo"


def arm_name(entry: float | None) -> str:
    """'placebo' or 'lam=<λ>' (the key of an arm in a study's measurements)."""
    return PLACEBO_ARM if entry is None else f"lam={float(entry):g}"


def _default_config(variant: str = ""):
    """The repository's configs/zoo.py (the zoo host), loaded from its file."""
    path = pathlib.Path(__file__).resolve().parents[2] / "configs" / "zoo.py"
    spec = importlib.util.spec_from_file_location("emojax_zoo_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _keep(values: dict) -> dict:
    """What the study keeps of `point_values`: every Δ (both scales, draws) and the rates."""
    out = {f"delta_mon/{t}": v for t, v in values["mon"]["types"].items()}
    out.update({f"delta_steer/{t}": v for t, v in values["steer"].items()})
    return {"values": out, "rates": values["rates"]}


def measure_point(
    point: Any,
    vs: Any,
    split: splits.RequestSplits,
    draws: Any,
    cfg,
    *,
    seed: int,
    entries: Sequence[float | None],
    placebo: str = "relabel",
    measure: Callable[..., dict] = point_values,
    spikes_of: Callable[..., arms.Spikes] = learn_spikes,
) -> dict[str, dict]:
    """Every arm of one point and seed, on the estimate split (with draws) and the truth split.

    Args:
      point: the `AxisPoint`.
      vs: the point's VectorSet (`cfg.sweep.method`).
      split: the seed's request splits.
      draws: the shared draws of the estimate split.
      cfg: the run config.
      seed: seed of the arms' random parts.
      entries: the arms (λ values and/or None for the placebo).
      placebo: the placebo's mode.
      measure: the estimator (`point_values`; a stand-in in tests).
      spikes_of: (point, vs, split, cfg) -> the planted directions (`learn_spikes`).

    Returns:
      arm name -> {"estimate": kept values, "truth": kept values, "info": spike info}.
    """
    spikes = None
    if any(e is not None for e in entries):
        spikes = spikes_of(point, vs, split, cfg)
    out, cfg_truth = {}, truth_config(cfg)
    for entry in entries:
        arm = arms.arm_for(entry, vs, spikes, seed, placebo=placebo)
        out[arm_name(entry)] = {
            "estimate": _keep(measure(point, arm, split.estimate, draws, cfg, None)),
            "truth": _keep(measure(point, arm, split.truth, None, cfg_truth, None)),
            "info": {} if spikes is None else spikes.info,
        }
    return out


def _truths(cells: list[dict], cfg) -> tuple[dict, dict]:
    """Per Δ name [P] truths on the rule's scale (NaN where not estimable), and rates [P]."""
    out = {}
    for name in value_names(cfg):
        scale = scale_of(cfg, name.split("/")[0])
        vals = [c["truth"]["values"][name] for c in cells]
        out[name] = np.array([v[scale]["estimate"] if v["estimable"] else np.nan for v in vals])
    rates = {t: np.array([c["truth"]["rates"][t]["estimate"] for c in cells])
             for t in FAILURE_TYPES}  # fmt: skip
    return out, rates


def scenario_outcomes(labels: Sequence[str], cells: list[dict], cfg) -> dict:
    """Planted and recovered break points of one seed and scenario.

    Args:
      labels: [P] axis labels.
      cells: [P] the scheduled arm's measurements per point (`measure_point` entries).
      cfg: the run config (margins, scales, required Δs, floor).

    Returns:
      {"planted": BreakPoint, "recovered": BreakPoint}.
    """
    b = cfg.breakpoint
    required = required_names(cfg)
    margins = {s: margin_of(cfg, s) for s in ("delta_mon", "delta_steer")}
    truths, rates = _truths(cells, cfg)
    planted = truth.planted_outcome(labels, truths, margins, required=required,
                                    failure_rates=rates, floor=float(b.failure_floor))  # fmt: skip
    deltas, margins, est_rates = break_inputs([c["estimate"] for c in cells], cfg)
    recovered = bp.find_break_point(
        labels, deltas, margins, required=required, failure_rates=est_rates,
        floor=float(b.failure_floor),
    )  # fmt: skip
    return {"planted": planted, "recovered": recovered}


def _outcome_key(brk: bp.BreakPoint) -> str:
    return f"break at {brk.label}" if brk.outcome == "break" else brk.outcome


def coverage(measurements: dict, cfg) -> dict[str, dict[str, Any]]:
    """Per Δ name: how often the estimate's interval (rule's scale) covers the truth.

    Counted over every seed, point and arm where both are estimable.
    """
    out = {}
    for name in value_names(cfg):
        scale = scale_of(cfg, name.split("/")[0])
        hits, n = 0, 0
        for per_point in measurements.values():
            for per_arm in per_point.values():
                for cell in per_arm.values():
                    e, t = cell["estimate"]["values"][name], cell["truth"]["values"][name]
                    if not (e["estimable"] and t["estimable"]):
                        continue
                    x, lo, hi = t[scale]["estimate"], e[scale]["lo"], e[scale]["hi"]
                    if not np.isfinite([x, lo, hi]).all():
                        continue
                    hits += int(lo <= x <= hi)
                    n += 1
        out[name] = {"covered": hits, "count": n, "rate": hits / n if n else float("nan")}
    return out


def by_arm(measurements: dict, cfg) -> dict[str, dict[str, dict[str, float]]]:
    """Arm -> Δ name -> mean truth and mean estimate (rule's scale and absolute) over seeds and
    points where estimable: Δ against λ."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for per_point in measurements.values():
        for per_arm in per_point.values():
            for arm, cell in per_arm.items():
                for name in value_names(cfg):
                    acc = out.setdefault(arm, {}).setdefault(name, {})
                    scale = scale_of(cfg, name.split("/")[0])
                    for which in ("truth", "estimate"):
                        v = cell[which]["values"][name]
                        if not v["estimable"]:
                            continue
                        for sc, tag in ((scale, ""), ("absolute", "_abs")):
                            acc.setdefault(which + tag, []).append(v[sc]["estimate"])
    return {
        arm: {n: {k: float(np.nanmean(x)) for k, x in acc.items()} for n, acc in per.items()}
        for arm, per in out.items()
    }


def validation_study(
    num_seeds: int = 20,
    *,
    cfg=None,
    lam: float | None = None,
    lams: Sequence[float] | None = None,
    scenarios: Sequence[str] = PLANTED,
    fractions: Sequence[float] | None = None,
    off: str | None = None,
    placebo: str | None = None,
    first_seed: int = 0,
    measure: Callable[..., dict] = point_values,
    spikes_of: Callable[..., arms.Spikes] = learn_spikes,
    points: Sequence[Any] | None = None,
    vector_sets: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Planted vs recovered outcomes, coverage of the truths and Δ against λ, over seeds.

    Args:
      num_seeds: seeds (each: a request split, the arms' random parts, the draws).
      cfg: the run config (default: the repository's configs/zoo.py, the zoo host).
      lam: the scenarios' spike strength (must be in `lams`); None: `cfg.validation.lam`.
      lams: the λ grid measured at every point (Δ against λ); 0 must be in it when `off` is
        'random'; None: (0, lam) with a random off, (lam,) with a placebo off.
      scenarios: the planted scenarios (`schedules.SCENARIOS` but 'none').
      fractions: learn / estimate / truth shares of the requests (None: the config's).
      off: what points without the spike carry ('random': λ = 0, or 'placebo'; None: the
        config's).
      placebo: the placebo's mode (None: the config's).
      first_seed: seeds are first_seed .. first_seed + num_seeds - 1.
      measure: the estimator (default `point_values`; tests pass a stand-in).
      spikes_of: how a point's planted directions are learned (default `learn_spikes`).
      points: the axis points (default: `axis_points(cfg)`, loaded one at a time).
      vector_sets: [P] the points' VectorSets (default: extracted at each point).

    Returns:
      {"scenarios": scenario -> {"planted": [S] outcome keys, "recovered": [S], "agree": rate,
      "planted_break": [S], "recovered_break": [S]}, "coverage", "by_arm", "labels",
      "sizes" (requests per split and kind, first seed), "seeds", "config": the study's
      settings}.
    """
    cfg = _default_config() if cfg is None else cfg
    b, v = cfg.breakpoint, cfg.validation
    # Unset study settings are the config's `validation` section (what a run plants).
    lam = float(v.lam if lam is None else lam)
    off = str(v.off if off is None else off)
    placebo = str(v.placebo if placebo is None else placebo)
    fractions = tuple(v.fractions if fractions is None else fractions)
    if lams is None:
        lams = (0.0, lam) if off == "random" else (lam,)
    if lam not in lams or (off == "random" and 0.0 not in lams):
        raise ValueError(f"lams={tuple(lams)} must hold lam={lam} (and 0 when off='random')")
    entries = [*map(float, lams), None]
    evalset = evaluation_set(cfg)
    seeds = list(range(first_seed, first_seed + num_seeds))
    split_of = {s: splits.split_requests(evalset, s, fractions) for s in seeds}
    draws_of = {s: shared_draws(split_of[s].estimate, b.num_bootstrap, s) for s in seeds}
    if points is None:
        points = axis_points(cfg, preflight(cfg))
    measurements: dict[str, dict[int, dict]] = {}  # point -> seed -> arm -> cell
    for i, point in enumerate(points):
        if vector_sets is not None:
            vs = vector_sets[i]
        else:
            m = point.model
            ex = extract.extract_model(m.params, m.config, m.tokenizer,
                                       **extract.config_kwargs(cfg))  # fmt: skip
            vs = ex.vector_sets[cfg.sweep.method]
        measurements[point.label] = {}
        for s in seeds:
            logging.info("validation study: %s, seed %d", point.label, s)
            measurements[point.label][s] = measure_point(
                point, vs, split_of[s], draws_of[s], cfg, seed=s, entries=entries,
                placebo=placebo, measure=measure, spikes_of=spikes_of,
            )  # fmt: skip
    labels = list(measurements)
    out_scenarios = {}
    for scenario in scenarios:
        plan = schedules.schedule(scenario, len(labels), lam, off=off)
        rows = {"planted": [], "recovered": [], "planted_break": [], "recovered_break": []}
        for s in seeds:
            cells = [measurements[p][s][arm_name(e)] for p, e in zip(measurements, plan,
                                                                      strict=True)]  # fmt: skip
            res = scenario_outcomes(labels, cells, cfg)
            for k in ("planted", "recovered"):
                rows[k].append(_outcome_key(res[k]))
                rows[f"{k}_break"].append(res[k].index)
        agree = np.mean([p == r for p, r in zip(rows["planted"], rows["recovered"], strict=True)])
        expected = schedules.expected_outcome(scenario, len(labels))
        out_scenarios[scenario] = {
            **rows, "agree": float(agree),
            "expected": f"break at {labels[expected[1]]}" if expected[0] == "break"
            else expected[0],
        }  # fmt: skip
    return {
        "scenarios": out_scenarios,
        "coverage": coverage(measurements, cfg),
        "by_arm": by_arm(measurements, cfg),
        "labels": list(labels),
        "sizes": split_of[seeds[0]].sizes() if seeds else {},
        "seeds": seeds,
        "config": {"lam": lam, "lams": list(lams), "fractions": list(fractions), "off": off,
                   "placebo": placebo, "margins": {s: margin_of(cfg, s) for s in
                                                   ("delta_mon", "delta_steer")},
                   "scales": {s: scale_of(cfg, s) for s in ("delta_mon", "delta_steer")},
                   "required": required_names(cfg), "num_bootstrap": int(b.num_bootstrap)},
    }  # fmt: skip


def _share(values: list[str]) -> str:
    keys, counts = np.unique(np.asarray(values, dtype=object).astype(str), return_counts=True)
    order = np.argsort(-counts)
    n = max(len(values), 1)
    return ", ".join(f"{keys[i]} {counts[i] / n:.0%}" for i in order)


def markdown_table(result: dict) -> str:
    """The study as Markdown: scenarios, coverage, and Δ against λ."""
    c = result["config"]
    lines = [
        f"Validation study: {len(result['seeds'])} seeds, λ = {c['lam']:g} "
        f"(off-points: {c['off']}), margins {c['margins']} on {c['scales']}, request "
        f"splits learn / estimate / truth = {c['fractions']} ({result['sizes']}).",
        "",
        "| scenario | expected | planted (truths) | recovered (estimate) | agree |",
        "|---|---|---|---|---|",
    ]
    for name, r in result["scenarios"].items():
        lines.append(f"| {name} | {r['expected']} | {_share(r['planted'])} | "
                     f"{_share(r['recovered'])} | {r['agree']:.0%} |")  # fmt: skip
    lines += ["", "| Δ (rule's scale) | truths covered by the 95 % interval |", "|---|---|"]
    for name, v in result["coverage"].items():
        rate = "n/a" if not v["count"] else f"{v['rate']:.0%}"
        lines.append(f"| {name} | {rate} ({v['covered']}/{v['count']}) |")
    names = list(result["coverage"])
    lines += ["", "| arm | " + " | ".join(f"{n} truth / est." for n in names) + " |",
              "|---|" + "---|" * len(names)]  # fmt: skip
    for arm, per in result["by_arm"].items():
        cells = []
        for n in names:
            v = per.get(n, {})
            fmt = lambda x: "n/e" if x is None or not np.isfinite(x) else f"{x:+.3f}"
            cells.append(f"{fmt(v.get('truth'))} / {fmt(v.get('estimate'))}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
