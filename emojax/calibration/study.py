"""The whole calibration study (Δ_steer, Δ_mon, the break rule) and its Markdown tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from emojax.calibration.break_rule import SCENARIOS, break_study
from emojax.calibration.monitor import monitor_study
from emojax.calibration.steer import SteerSim, steer_study


def run_calibration(
    num_seeds: int = 50, *, quick: bool = False, margin: float = 0.1
) -> dict[str, Any]:
    """Δ_steer under the null and under a planted effect, and every break scenario.

    ``quick`` shrinks requests and draws (for CI); the estimators are unchanged.
    """
    sim = SteerSim(num_requests=120) if quick else SteerSim()
    draws = 200 if quick else 400
    seeds = range(num_seeds)
    steer = {
        "null": steer_study(seeds, effect=0.0, sim=sim, num_draws=draws),
        "planted": steer_study(seeds, effect=1.0, sim=sim, num_draws=draws),
    }
    breaks = {
        s.name: break_study(seeds, s, margin=margin, sim=sim, num_draws=draws) for s in SCENARIOS
    }
    mon_kw = dict(num_requests=100 if quick else 180, num_draws=100 if quick else 200)
    monitor = {
        "null": monitor_study(seeds, coupling=0.0, **mon_kw),
        "planted": monitor_study(seeds, coupling=1.0, **mon_kw),
    }
    strip = lambda d: {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
    return {
        "num_seeds": num_seeds,
        "quick": quick,
        "sim": dataclasses.asdict(sim),
        "num_draws": draws,
        "steer": {k: strip(v) for k, v in steer.items()},
        "monitor": {**monitor, "cues": 4, **mon_kw},
        "break": breaks,
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The calibration tables (Δ_steer intervals; break rule) as Markdown."""
    s = result["steer"]
    lines = [
        f"Δ_steer, 95 % interval, {result['num_seeds']} seeds, "
        f"{result['sim']['num_requests']} requests x {result['sim']['cues']} cues, "
        f"{result['num_draws']} cluster draws:",
        "",
        "| truth | mean Δ_steer | estimate > 0 | covers truth | covers 0 | lo > 0 | hi < 0 "
        "| mean half-width |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s.items():
        lines.append(
            f"| {name} (mean Δ {r['mean_truth']:+.3f}) | {r['mean_estimate']:+.3f} "
            f"| {r['positive_fraction']:.2f} | {r['coverage_truth']:.2f} "
            f"| {r['coverage_zero']:.2f} | {r['significant']:.2f} | {r['negative']:.2f} "
            f"| {r['mean_half_width']:.3f} |"
        )
    m = result["monitor"]
    lines += [
        "",
        f"Δ_mon (NumPy L2 logistic probes, 5 folds grouped by request, refitted in each of "
        f"{m['num_draws']} cluster draws), {m['num_requests']} requests x {m['cues']} cues:",
        "",
        "| truth | mean Δ_mon | estimate > 0 | covers 0 | lo > 0 | hi < 0 | mean half-width |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("null", "planted"):
        r = m[name]
        truth = "null (Δ 0)" if name == "null" else f"planted (coupling {r['coupling']:g})"
        lines.append(
            f"| {truth} | {r['mean_estimate']:+.4f} | {r['positive_fraction']:.2f} "
            f"| {r['coverage_zero']:.2f} | {r['significant']:.2f} | {r['negative']:.2f} "
            f"| {r['mean_half_width']:.4f} |"
        )
    margin = next(iter(result["break"].values()))["margin"]
    lines += [
        "",
        f"Break rule (margin {margin:g} on Δ_steer), 4-point simulated axes:",
        "",
        "| scenario | planted answer | true Δ per point | correct | break found | false break "
        "| interval covers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["break"].values():
        cover = "–" if np.isnan(r["interval_covers"]) else f"{r['interval_covers']:.2f}"
        truth = ", ".join(f"{x:+.2f}" for x in r["true_delta"])
        lines.append(
            f"| {r['scenario']} | {r['expected']} | {truth} | {r['correct']:.2f} "
            f"| {r['break_found']:.2f} | {r['false_break']:.2f} | {cover} |"
        )
    return "\n".join(lines) + "\n"
