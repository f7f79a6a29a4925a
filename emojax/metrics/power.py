"""The power preflight: the smallest margin each required Δ can confirm, from failure counts.

Dimension legend: S strata (failing / non-failing requests of one failure type).

Computed after a point's unsteered behaviour pass and before its sweep (DESIGN.md §4): an
equivalence test confirms a margin when the Δ's upper 95 % bound falls below it. At a true
Δ of 0 the bound sits near z·SE, and it falls below the margin in 80 % of samples when

    margin >= (z_0.975 + z_0.8) · SE = 2.80 · SE.

That margin is the *smallest confirmable margin*; a required Δ whose margin is smaller is
underpowered at this point. The standard errors are approximations stated here so that the
preflight can be checked against the realised half-widths (`report.md` prints both):

* **Δ_steer** (stratified, reweighted): the Δ is a population-weighted mean over strata of
  per-request differences between the two arms' chosen cells, each in [−1, 1]. Under the
  null a share ``d_s`` of a stratum's requests disagree, so ``SE² ≈ Σ_s W_s² d_s / n_s``
  with W_s the stratum's population share and n_s its steered requests. The defaults
  ``d = 0.15`` among failing and ``0.03`` among non-failing requests (steering rarely breaks
  a request the chosen cell was chosen not to break) reproduce the zoo's realised half-width
  (0.078 at 22 failing + 26 non-failing requests, base point of the default run: predicted
  1.96 · SE = 0.082). On the relative scale SE is divided by the unsteered failure rate.
* **Δ_mon**: ``SE ≈ k · sqrt(A (1 − A)) · sqrt(1/n_fail + 1/n_ok)`` with A the controls'
  AUROC (the policy logit's AUROC stands in before the probes run) and ``k = 0.12``, the
  ratio measured on the zoo's default run (Δ_mon half-widths of 0.0096 and 0.0030 at
  n = 94/125 and 105/226 requests, A = 0.92 and 0.98). On the relative scale SE is divided
  by 1 − A.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Z_CONFIRM = 1.959964 + 0.841621  # two-sided 95 % bound, 80 % power
DISAGREEMENT = {"failing": 0.15, "ok": 0.03}
MON_FACTOR = 0.12


def steer_margin(
    strata: Mapping[str, tuple[int, int]],
    failure_rate: float,
    *,
    disagreement: Mapping[str, float] = DISAGREEMENT,
    scale: str = "relative",
    min_denominator: float = 0.0,
) -> float:
    """Smallest confirmable Δ_steer margin of one failure type.

    Args:
      strata: stratum -> (steered requests, population requests), e.g. {"failing": (60, 94),
        "ok": (30, 125)}.
      failure_rate: the point's unsteered failure rate of the type (the relative scale's
        denominator).
      disagreement: stratum -> share of its requests whose outcome differs between the two
        arms' chosen cells under the null.
      scale: "absolute" or "relative".
      min_denominator: the relative scale's floor on the rate (`emojax.metrics.scales`).

    Returns:
      The margin (inf when nothing is steered or the rate is 0 on the relative scale).
    """
    total = sum(p for _, p in strata.values())
    var = 0.0
    for name, (n, pop) in strata.items():
        if pop == 0:
            continue
        if n == 0:
            return math.inf  # a stratum of the population is not steered at all
        var += (pop / total) ** 2 * disagreement[name] / n
    if total == 0 or var == 0.0:
        return math.inf
    se = math.sqrt(var)
    if scale == "relative":
        rate = max(failure_rate, min_denominator)
        if rate <= 0:
            return math.inf
        se /= rate
    return Z_CONFIRM * se


def mon_margin(
    num_failing: int, num_ok: int, auroc: float, *, scale: str = "relative",
    min_denominator: float = 0.0,
) -> float:  # fmt: skip
    """Smallest confirmable Δ_mon margin of one failure type (requests, not prompts); the
    relative scale divides by max(1 − AUROC, min_denominator)."""
    if num_failing == 0 or num_ok == 0:
        return math.inf
    a = min(max(float(auroc), 0.5), 1.0 - 1e-6)
    se = MON_FACTOR * math.sqrt(a * (1 - a)) * math.sqrt(1 / num_failing + 1 / num_ok)
    if scale == "relative":
        se /= max(1.0 - a, min_denominator)
    return Z_CONFIRM * se
