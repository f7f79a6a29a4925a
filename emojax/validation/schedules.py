"""Planted schedules along the axis: which arm each point carries (`validation.scenario`).

A schedule is one entry per axis point: a spike strength λ >= 0 (the spiked arm
`normalize(r + λ u)`; λ = 0 is a pure random arm), or `PLACEBO` (None: the controls relabelled
as emotions). The break rule applied to the measured truths of these arms gives the planted
outcome (`emojax.validation.truth.planted_outcome`); when the truths behave (λ > 0 above the
margins, λ = 0 and the placebo below) the scenarios plant:

* ``vanishing``: λ up to and including the middle point ((P − 1) // 2), `off` after: a break
  at the point after the middle;
* ``persistent``: λ everywhere: ``not reached``;
* ``early``: λ at the first point only: a break at the second point;
* ``null``: the placebo everywhere: a break at the first point (value never shown);
* ``none``: no validation arm (an empty schedule).
"""

from __future__ import annotations

SCENARIOS = ("none", "vanishing", "persistent", "early", "null")
PLACEBO = None  # a schedule entry: the placebo arm
OFF = ("random", "placebo")  # what a point without the spike carries


def schedule(scenario: str, num_points: int, lam: float, *, off: str = "random") -> list:
    """Per-point arm of a scenario: a float λ, or `PLACEBO` (None).

    Args:
      scenario: one of `SCENARIOS`.
      num_points: P, the axis points.
      lam: the spike strength at the points that carry it (> 0).
      off: what the other points carry: 'random' (λ = 0, a pure random arm, the null's
        distribution) or 'placebo' (true Δ exactly 0 for monitoring; the safer plant where
        random directions carry monitoring value of their own, as on the zoo).

    Returns:
      P entries (an empty list for 'none').

    Raises:
      ValueError: an unknown scenario or `off`, P < 1, or λ <= 0 where a spike is planted.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"validation.scenario must be one of {SCENARIOS}, not {scenario!r}")
    if off not in OFF:
        raise ValueError(f"off must be one of {OFF}, not {off!r}")
    if num_points < 1:
        raise ValueError(f"a schedule needs at least one axis point, got {num_points}")
    if scenario == "none":
        return []
    if scenario == "null":
        return [PLACEBO] * num_points
    if not lam > 0:
        raise ValueError(f"scenario {scenario!r} plants a spike: lam must be > 0, got {lam}")
    zero = 0.0 if off == "random" else PLACEBO
    middle = (num_points - 1) // 2
    if scenario == "vanishing":
        return [float(lam) if i <= middle else zero for i in range(num_points)]
    if scenario == "persistent":
        return [float(lam)] * num_points
    return [float(lam)] + [zero] * (num_points - 1)  # early


def expected_outcome(scenario: str, num_points: int) -> tuple[str, int | None]:
    """The outcome a scenario plants when its truths behave: (outcome, break index or None).

    Raises:
      ValueError: for 'none' (nothing planted) or an unknown scenario.
    """
    if scenario not in SCENARIOS or scenario == "none":
        raise ValueError(f"no planted outcome for scenario {scenario!r}")
    if scenario == "persistent":
        return "not reached", None
    if scenario == "null":
        return "break", 0
    if scenario == "early":
        return ("break", 1) if num_points > 1 else ("not reached", None)
    middle = (num_points - 1) // 2
    return ("break", middle + 1) if middle + 1 < num_points else ("not reached", None)
