"""Scales of the incremental values: absolute, and relative to the ceiling the policy sets.

Dimension legend: R bootstrap draws.

An absolute Δ has a ceiling set by the policy: Δ_steer (a failure-rate difference) cannot
exceed the unsteered failure rate, Δ_mon (an AUROC difference) cannot exceed
1 − AUROC(controls). A policy that removes failures therefore makes every absolute Δ small,
whatever the emotions do. The relative scales divide by that ceiling (DESIGN.md §4):

* ``relative_steer = Δ_steer / unsteered failure rate``: the share of the point's failures
  that the emotion arm fixes beyond the controls arm;
* ``relative_mon = ΔAUROC / (1 − AUROC(controls))``: the share of the controls' remaining
  headroom that the emotions close.

Both are computed draw by draw from the same request draws as the absolute values (the
denominator is resampled with the numerator) and get a centred interval like every Δ.

**A floor on the denominator** (``min_denominator``, the configs' `breakpoint.mon_min_headroom`
and `breakpoint.steer_min_rate`, default 0.05). A ceiling near 0 makes the ratio explode: with
controls at AUROC 0.999 a ΔAUROC of −0.002 reads as −2 (−200 % of the headroom), and its
interval spans everything. Below the floor the denominator is held at the floor, so the scale
turns absolute in units of the floor: at a relative margin of 0.2, a Δ_mon is confirmed small
when its upper bound is below 0.2 × 0.05 = 0.01 AUROC, i.e. emotions cannot add a
hundredth of AUROC to controls that already leave less than 0.05. That is a statement about
the emotions' incremental value, not about missing failures: a type whose failures are gone
is `failures eliminated` (its rate's upper bound under `breakpoint.failure_floor`), and a Δ
with too few failing requests stays not estimable. A denominator at or below
`MIN_DENOMINATOR` with no floor leaves the value undefined (NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emojax import stats

SCALES = ("absolute", "relative")
# A ceiling this small has no headroom left to share: the relative value is undefined.
MIN_DENOMINATOR = 1e-6


def _ratio(num: Any, den: Any, min_denominator: float = 0.0) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    den = np.where(np.isfinite(den), np.maximum(den, min_denominator), den)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > MIN_DENOMINATOR, num / den, np.nan)


def relative_steer(delta: Any, unsteered_rate: Any, min_denominator: float = 0.0) -> np.ndarray:
    """Δ_steer as the share of the point's (unsteered) failures fixed beyond the controls."""
    return _ratio(delta, unsteered_rate, min_denominator)


def relative_mon(delta: Any, auroc_controls: Any, min_denominator: float = 0.0) -> np.ndarray:
    """Δ_mon as the share of the controls' AUROC headroom (1 − AUROC) that emotions close."""
    return _ratio(delta, 1.0 - np.asarray(auroc_controls, np.float64), min_denominator)


def on_scale(
    estimate: float, samples: np.ndarray, denominator: float, denominator_samples: np.ndarray,
    level: float = 0.95, min_denominator: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """A relative value: estimate, centred interval and draws from absolute values and ceilings.

    Args:
      estimate: the absolute Δ on the full data.
      samples: [R] its draws.
      denominator: the ceiling on the full data (unsteered failure rate, or 1 − AUROC).
      denominator_samples: [R] the ceiling in the same draws.
      level: interval coverage.
      min_denominator: the floor on the ceiling (module docstring).

    Returns:
      ``estimate``, ``lo``, ``hi`` (NaN when undefined), ``samples`` [R] (NaN where a draw's
      ceiling is 0).
    """
    est = float(_ratio(estimate, denominator, min_denominator))
    draws = _ratio(samples, denominator_samples, min_denominator)
    if not np.isfinite(est):
        nan = float("nan")
        return {"estimate": nan, "lo": nan, "hi": nan, "samples": draws}
    lo, hi = stats.centred_interval(est, draws, level)
    return {"estimate": est, "lo": float(lo), "hi": float(hi), "samples": draws}
