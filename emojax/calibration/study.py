"""The calibration study of the break rule as shipped, and its Markdown tables.

Over seeds, every scenario (`emojax.calibration.scenarios.SCENARIOS`) is simulated
(`emojax.calibration.axis.simulate_axis`) and read by the rule; measured:

* per Δ and failure type, over (point, seed) where the Δ is estimable: coverage of the truth
  by the 95 % interval on the relative and on the absolute scale, and the share of each
  status, split by truth (0 or planted);
* false "present": status present where the truth is 0;
* per scenario: the share of axes with the planted answer, the false-break rate (a break at
  a point where the planted answer is not a break there), the outcomes, and whether the
  break interval covers the planted answer.

The same simulated axes are also read by a deliberately broken rule
(`not_estimable_as_vanished`: the rule before issue 23), to show that the study sees the
false breaks missing data used to create.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging

from emojax import breakpoint as bp
from emojax.calibration.axis import simulate_axis
from emojax.calibration.scenarios import SCENARIOS, Regime, Scenario

Rule = Callable[..., bp.BreakPoint]
_BOUNDS = ("estimate", "lo", "hi")


def not_estimable_as_vanished(labels, deltas, margins, **kwargs) -> bp.BreakPoint:
    """The break rule with a not-estimable Δ counted as vanished (deliberately wrong).

    Every Δ that cannot be estimated, at a point or in a draw, is given the interval [0, 0],
    below any margin: what `emojax/breakpoint.py` did before issue 23.
    """
    broken = {}
    for name, d in deltas.items():
        ok = np.asarray(d["estimable"], bool)
        samples = np.asarray(d["samples"], np.float64)
        ok_r = np.asarray(d.get("estimable_draws", ok[:, None]), bool) & ok[:, None]
        broken[name] = {
            **{k: np.where(ok, np.asarray(d[k], np.float64), 0.0) for k in _BOUNDS},
            "samples": np.where(ok_r, samples, 0.0),
            "estimable": np.ones_like(ok),
            "estimable_draws": np.ones(samples.shape, bool),
        }
    return bp.find_break_point(labels, broken, margins, **kwargs)


RULES: dict[str, Rule] = {
    "shipped": bp.find_break_point,
    "not-estimable-as-vanished": not_estimable_as_vanished,
}


def quick_regime() -> Regime:
    """A smaller regime for CI: fewer requests, draws, fold splits, truth prompts."""
    return Regime(num_requests=160, num_draws=100, num_splits=2, failing_requests=40,
                  ok_requests=20, truth_prompts=50_000)  # fmt: skip


def _code(outcome: str, index: int | None, num_points: int) -> int:
    """Outcome as the rule's interval code (b; P: not reached; P + 1: insufficient data)."""
    if outcome in ("break", "failures eliminated first"):
        return int(index)
    return num_points if outcome == "not reached" else num_points + 1


def read_axis(axis: dict, scenario: Scenario, regime: Regime, rule: Rule) -> dict[str, Any]:
    """The rule's answer on one simulated axis, scored against the planted answer."""
    brk = rule(axis["labels"], axis["deltas"], dict(regime.margins), required=regime.required,
               failure_rates=axis["failure_rates"], floor=regime.floor)  # fmt: skip
    answer = (brk.outcome, brk.index)
    p = scenario.num_points
    lo, hi = brk.interval_index
    return {
        "outcome": brk.outcome,
        "index": brk.index,
        "correct": answer == scenario.answer,
        "right": answer == scenario.answer or answer in scenario.also_right,
        "false_break": brk.outcome == "break" and answer != scenario.answer,
        "interval_covers": bool(lo <= _code(*scenario.answer, p) <= hi),
        "status": brk.status,
    }


def _values(axis: dict, scenario: Scenario, status: dict) -> list[dict]:
    """One row per (Δ, point): the planted value, truth, intervals, status."""
    plans = dict(scenario.plans)
    rows = []
    for name, per_point in axis["values"].items():
        stat, ftype = name.split("/")
        planted = plans[ftype].steer if stat == "delta_steer" else plans[ftype].mon
        for i, v in enumerate(per_point):
            rows.append({"scenario": scenario.name, "name": name, "point": i,
                         "planted": float(planted[i]), "status": status[name][i], **v})  # fmt: skip
    return rows


def run_calibration(
    num_seeds: int = 50,
    *,
    quick: bool = False,
    regime: Regime | None = None,
    scenarios: Sequence[Scenario] = SCENARIOS,
    rules: dict[str, Rule] | None = None,
    first_seed: int = 0,
) -> dict[str, Any]:
    """Every scenario over `num_seeds` seeds, read by every rule, summarised.

    Args:
      num_seeds: simulated axes per scenario.
      quick: `quick_regime()` (for CI) unless `regime` is given.
      regime: the settings calibrated (default: the shipped ones, `Regime()`).
      scenarios: the planted axes.
      rules: name -> rule (default `RULES`); 'shipped' gives the interval statistics.
      first_seed: seeds are first_seed .. first_seed + num_seeds − 1.

    Returns:
      A JSON-ready dict: ``regime``, ``num_seeds``, ``seconds``, ``values`` (per Δ name and
      truth class), ``scenarios`` (per scenario and rule), ``scenario_info``.
    """
    regime = regime or (quick_regime() if quick else Regime())
    rules = dict(RULES if rules is None else rules)
    start = time.perf_counter()
    value_rows, reads = [], {s.name: {r: [] for r in rules} for s in scenarios}
    for seed in range(first_seed, first_seed + num_seeds):
        for scenario in scenarios:
            axis = simulate_axis(seed, scenario, regime)
            for name, rule in rules.items():
                reads[scenario.name][name].append(read_axis(axis, scenario, regime, rule))
            shipped = reads[scenario.name][next(iter(rules))][-1]
            value_rows += _values(axis, scenario, shipped["status"])
        logging.info("calibration: seed %d done (%.0f s)", seed, time.perf_counter() - start)
    return {
        "regime": dataclasses.asdict(regime),
        "num_seeds": num_seeds,
        "seconds": time.perf_counter() - start,
        "values": summarise_values(value_rows),
        "null_by_scenario": null_by_scenario(value_rows),
        "scenarios": {
            s: {r: summarise_reads(v) for r, v in per.items()} for s, per in reads.items()
        },
        "scenario_info": {s.name: {"answer": list(s.answer), "what": s.what} for s in scenarios},
    }


def _covers(scale: str) -> Callable[[dict], bool]:
    return lambda row: row[scale][1] <= row["truth"][scale] <= row[scale][2]


def _share(pred: Callable[[dict], Any], rows: list[dict]) -> float:
    return float(np.mean([pred(r) for r in rows])) if rows else float("nan")


def summarise_values(rows: list[dict]) -> list[dict]:
    """Coverage and statuses per Δ name and truth class (0 / planted).

    Cases are (point, seed) pairs; interval statistics use the estimable ones where the
    failure type is not eliminated (where an interval is read).
    """
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        for truth_class in ("0", "planted"):
            zero = truth_class == "0"
            sel = [r for r in rows if r["name"] == name and (r["planted"] == 0) == zero]
            if not sel:
                continue
            est = [r for r in sel if r["estimable"] and r["status"] != "failures eliminated"]
            out.append({
                "name": name,
                "truth": truth_class,
                "cases": len(sel),
                "estimable": len(est),
                "coverage_relative": _share(_covers("relative"), est),
                "coverage_absolute": _share(_covers("absolute"), est),
                **{s: _share(lambda r, s=s: r["status"] == s, est)
                   for s in ("present", "vanished", "undetermined")},
                "mean_truth": _share(lambda r: r["truth"]["relative"], est),
                "mean_estimate": _share(lambda r: r["relative"][0], est),
                "mean_half_width": _share(lambda r: r["relative"][2] - r["relative"][0], est),
            })  # fmt: skip
    return out


def null_by_scenario(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Where the truth is 0, per scenario and Δ: estimable cases, coverage, share present."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r["planted"] == 0 and r["estimable"] and r["status"] != "failures eliminated":
            out.setdefault(r["scenario"], {}).setdefault(r["name"], []).append(r)
    return {
        s: {name: {"cases": len(v), "coverage_relative": _share(_covers("relative"), v),
                   "present": _share(lambda r: r["status"] == "present", v)}
            for name, v in per.items()}
        for s, per in out.items()
    }  # fmt: skip


def summarise_reads(reads: list[dict]) -> dict[str, Any]:
    """Shares of right answers, false breaks and outcomes over seeds."""
    mean = lambda k: float(np.mean([r[k] for r in reads]))  # noqa: E731
    return {
        "num": len(reads),
        "correct": mean("correct"),
        "right": mean("right"),
        "false_break": mean("false_break"),
        "interval_covers": mean("interval_covers"),
        "outcomes": {o: float(np.mean([r["outcome"] == o for r in reads])) for o in bp.OUTCOMES},
        "break_index": [r["index"] for r in reads],
    }


def _pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.0f} %"


def markdown_table(result: dict[str, Any]) -> str:
    """The calibration's two tables (intervals and statuses; the rule per scenario)."""
    reg = result["regime"]
    margins = ", ".join(f"{k} {v:g}" for k, v in reg["margins"])
    lines = [
        f"Calibration of the break rule as shipped: {result['num_seeds']} seeds per scenario, "
        f"margins ({reg['scale']}) {margins}, floor {reg['floor']:g}, min_failures "
        f"{reg['min_failures']}, κ {reg['kappa']:g}, tolerance {reg['tolerance']}, "
        f"{reg['num_draws']} shared request draws, "
        f"{reg['num_requests']} requests per type x {reg['cues'][0]}–{reg['cues'][1]} prompts, "
        f"Δ_steer on {reg['failing_requests']} failing + {reg['ok_requests']} non-failing "
        f"steered requests, equal arms of 3 grids of {reg['grid_side']} x {reg['grid_side']} "
        f"cells ({result['seconds']:.0f} s).",
        "",
        "| Δ | truth | cases | estimable | covers truth (relative) | covers truth (absolute) "
        "| present | vanished | undetermined | mean truth (rel.) | mean estimate (rel.) "
        "| mean half-width (rel.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in result["values"]:
        lines.append(
            f"| {v['name']} | {v['truth']} | {v['cases']} | {v['estimable']} "
            f"| {_pct(v['coverage_relative'])} | {_pct(v['coverage_absolute'])} "
            f"| {_pct(v['present'])} | {_pct(v['vanished'])} | {_pct(v['undetermined'])} "
            f"| {v['mean_truth']:+.2f} | {v['mean_estimate']:+.2f} | {v['mean_half_width']:.2f} |"
        )
    rules = list(next(iter(result["scenarios"].values())))
    other = [r for r in rules if r != "shipped"]
    lines += [
        "",
        "| scenario | planted answer | returns it | right (also: another right answer) "
        "| false break | break | not reached "
        "| failures eliminated first | insufficient data | interval covers the answer "
        + "".join(f"| false break, rule '{r}' " for r in other)
        + "|",
        "|---|---|---|---|---|---|---|---|---|---" + "|---" * len(other) + "|",
    ]
    for name, per_rule in result["scenarios"].items():
        r = per_rule["shipped"]
        outcome, index = result["scenario_info"][name]["answer"]
        answer = outcome if index is None else f"{outcome} at p{index}"
        o = r["outcomes"]
        lines.append(
            f"| {name} | {answer} | {_pct(r['correct'])} | {_pct(r['right'])} "
            f"| {_pct(r['false_break'])} "
            f"| {_pct(o['break'])} | {_pct(o['not reached'])} "
            f"| {_pct(o['failures eliminated first'])} | {_pct(o['insufficient data'])} "
            f"| {_pct(r['interval_covers'])} "
            + "".join(f"| {_pct(per_rule[x]['false_break'])} " for x in other)
            + "|"
        )
    names = [v["name"] for v in result["values"] if v["truth"] == "0"]
    lines += [
        "",
        "Where the truth is 0, by scenario: share 'present' (coverage of the truth, estimable "
        "cases):",
        "",
        "| scenario | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for scenario, per in result["null_by_scenario"].items():
        cells = []
        for name in names:
            v = per.get(name)
            cells.append("–" if v is None else f"{_pct(v['present'])} "
                         f"({_pct(v['coverage_relative'])}, {v['cases']})")  # fmt: skip
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
