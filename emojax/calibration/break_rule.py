"""Calibration of the break rule on simulated axes with planted answers.

Each `Scenario` is a 4-point axis: `null` (break at the first point), `persistent` (not
reached), `marginal` (value just above the margin everywhere, the equivalence test's boundary:
not reached), `vanishing` (break where the coupling stops), `eliminated` (failures vanish while
coupling persists). `break_study` measures how often the rule returns the planted answer and
how often it breaks too early.

Dimension legend: P axis points, U requests, R bootstrap draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from emojax import breakpoint as bp
from emojax import stats
from emojax.calibration.steer import SteerSim, simulate_steer, true_delta
from emojax.metrics import incremental


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A simulated axis with a planted answer.

    Attributes:
      name: scenario name.
      effects: [P] planted emotion advantage (logits) per point.
      base_logits: [P] unsteered failure logit per point (the policy along the axis).
      expected: the right answer: an axis index, or an outcome ('not reached',
        'failures eliminated first').
    """

    name: str
    effects: tuple[float, ...]
    base_logits: tuple[float, ...]
    expected: int | str


SCENARIOS = (
    Scenario("null", (0.0, 0.0, 0.0, 0.0), (0.3, 0.0, -0.3, -0.6), 0),
    Scenario("persistent", (2.0, 2.0, 2.0, 2.0), (0.3, 0.0, -0.3, -0.6), "not reached"),
    Scenario("marginal", (1.0, 1.0, 1.0, 1.0), (0.3, 0.0, -0.3, -0.6), "not reached"),
    Scenario("vanishing", (2.0, 2.0, 0.0, 0.0), (0.3, 0.0, -0.3, -0.6), 2),
    Scenario("eliminated", (2.0, 2.0, 2.0, 2.0), (0.3, 0.0, -9.0, -9.0),
             "failures eliminated first"),
)  # fmt: skip


def simulate_axis(
    seed: int,
    scenario: Scenario,
    *,
    sim: SteerSim = SteerSim(),  # noqa: B008 (frozen: an immutable default)
    kappa: float = 0.15,
    num_draws: int = 400,
    min_failures: int = 10,
    num_folds: int = 5,
    num_splits: int = 2,
) -> dict[str, Any]:
    """Δ_steer at every point of a simulated axis, on one shared request-draw matrix.

    The same requests (and request effects) appear at every point, as in a real sweep, and
    one matrix of request draws is shared by all points so the break interval is paired.

    Returns:
      ``deltas`` (the `find_break_point` input for 'delta_steer/harmful_compliance') and
      ``truth`` [P] (population Δ_steer per point).
    """
    rng = np.random.default_rng((seed, 13))
    a = rng.normal(0, sim.request_sd, sim.num_requests)
    g = sim.num_cells
    cells = (
        np.concatenate([[0.0], rng.normal(sim.cell_mean, sim.cell_spread, g - 1)]),
        np.concatenate([[0.0], rng.uniform(0.02, sim.kl_max, g - 1)]),
    )
    weights = stats.request_draws(sim.num_requests, num_draws, seed)
    keys = ("estimate", "lo", "hi")
    out: dict[str, list] = {k: [] for k in (*keys, "samples", "estimable")}
    truth = []
    for effect, base in zip(scenario.effects, scenario.base_logits, strict=True):
        data = simulate_steer(
            rng, sim, effect=effect, base_logit=base, request_effect=a, cells=cells
        )
        truth.append(true_delta(sim, data, kappa))
        d = incremental.delta_steer(
            data["fail_controls"], data["fail_emotion"], data["kl_controls"],
            data["kl_emotion"], data["request"], kappa, num_requests=sim.num_requests,
            weights=weights, num_folds=num_folds, num_splits=num_splits, seed=seed,
        )  # fmt: skip
        ok = bp.estimable(d["num_requests_with_failure"], d["num_requests"], min_failures)
        for k in keys:
            out[k].append(d[k] if ok else np.nan)
        out["samples"].append(d["samples"] if ok else np.full(num_draws, np.nan))
        out["estimable"].append(ok)
    deltas = {"delta_steer/harmful_compliance": {k: np.asarray(v) for k, v in out.items()}}
    return {"deltas": deltas, "truth": np.asarray(truth)}


def break_study(
    seeds: Sequence[int],
    scenario: Scenario,
    *,
    margin: float = 0.1,
    sim: SteerSim = SteerSim(),  # noqa: B008 (frozen: an immutable default)
    kappa: float = 0.15,
    num_draws: int = 400,
) -> dict[str, Any]:
    """How often the break rule returns the planted answer, and how often it breaks too early.

    ``false_break`` is the share of seeds whose break falls on a point where the planted Δ is
    still at or above the margin at that point or later (value that is still there declared
    vanished); ``correct`` the share returning exactly the planted answer.
    """
    labels = [f"p{i}" for i in range(len(scenario.effects))]
    correct, false_break, interval_ok, found, truths = [], [], [], [], []
    for seed in seeds:
        axis = simulate_axis(seed, scenario, sim=sim, kappa=kappa, num_draws=num_draws)
        brk = bp.find_break_point(labels, axis["deltas"], {"delta_steer": margin})
        truths.append(axis["truth"])
        answer = brk.index if brk.outcome == "break" else brk.outcome
        correct.append(answer == scenario.expected)
        found.append(brk.outcome == "break")
        value_left = np.flip(np.maximum.accumulate(np.flip(axis["truth"]))) >= margin
        false_break.append(brk.index is not None and bool(value_left[brk.index]))
        if isinstance(scenario.expected, int):
            lo, hi = brk.interval_index
            interval_ok.append(lo <= scenario.expected <= hi)
    return {
        "scenario": scenario.name,
        "expected": scenario.expected,
        "num_seeds": len(correct),
        "correct": float(np.mean(correct)),
        "break_found": float(np.mean(found)),
        "false_break": float(np.mean(false_break)),
        "interval_covers": float(np.mean(interval_ok)) if interval_ok else float("nan"),
        "true_delta": np.mean(truths, axis=0).round(4).tolist(),
        "margin": margin,
    }
