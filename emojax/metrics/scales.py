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
denominator is resampled with the numerator) and get a centred interval like every Δ. A
denominator at or below `MIN_DENOMINATOR` leaves the relative value undefined (NaN): there is
no headroom to share, which the break rule reads as not estimable, never as vanished.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emojax import stats

SCALES = ("absolute", "relative")
# A ceiling this small has no headroom left to share: the relative value is undefined.
MIN_DENOMINATOR = 1e-6


def _ratio(num: Any, den: Any) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > MIN_DENOMINATOR, num / den, np.nan)


def relative_steer(delta: Any, unsteered_rate: Any) -> np.ndarray:
    """Δ_steer as the share of the point's (unsteered) failures fixed beyond the controls."""
    return _ratio(delta, unsteered_rate)


def relative_mon(delta: Any, auroc_controls: Any) -> np.ndarray:
    """Δ_mon as the share of the controls' AUROC headroom (1 − AUROC) that emotions close."""
    return _ratio(delta, 1.0 - np.asarray(auroc_controls, np.float64))


def on_scale(
    estimate: float, samples: np.ndarray, denominator: float, denominator_samples: np.ndarray,
    level: float = 0.95,
) -> dict[str, Any]:  # fmt: skip
    """A relative value: estimate, centred interval and draws from absolute values and ceilings.

    Args:
      estimate: the absolute Δ on the full data.
      samples: [R] its draws.
      denominator: the ceiling on the full data (unsteered failure rate, or 1 − AUROC).
      denominator_samples: [R] the ceiling in the same draws.
      level: interval coverage.

    Returns:
      ``estimate``, ``lo``, ``hi`` (NaN when undefined), ``samples`` [R] (NaN where a draw's
      ceiling is 0).
    """
    est = float(_ratio(estimate, denominator))
    draws = _ratio(samples, denominator_samples)
    if not np.isfinite(est):
        nan = float("nan")
        return {"estimate": nan, "lo": nan, "hi": nan, "samples": draws}
    lo, hi = stats.centred_interval(est, draws, level)
    return {"estimate": est, "lo": float(lo), "hi": float(hi), "samples": draws}
