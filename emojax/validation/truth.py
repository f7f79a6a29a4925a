"""The planted outcome: the break rule applied to the arms' measured truths.

Dimension legend: P axis points.

A truth is the estimator's point estimate on the truth split (many more requests than the
estimate's), so it enters the rule as a zero-width interval: lo = hi = estimate, one draw. Its
status is then `present` when it reaches its margin, `vanished` below it (an exact value has
no interval to straddle the margin), `failures eliminated` where the failure rate's truth is
below the floor, and `undetermined` where it is not estimable: a truth the data cannot give
stays missing, and the planted outcome is then `insufficient data` wherever the rule needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emojax import breakpoint as bp


def zero_width(values: Any) -> dict[str, np.ndarray]:
    """A Δ given exactly: estimate = lo = hi, one draw, estimable where finite.

    Args:
      values: [P] truths (NaN where not estimable).
    """
    v = np.asarray(values, np.float64).reshape(-1)
    return {"estimate": v, "lo": v, "hi": v, "samples": v[:, None], "estimable": np.isfinite(v)}


def planted_outcome(
    labels: Sequence[str],
    truths: Mapping[str, Any],
    margins: Mapping[str, float],
    *,
    required: Sequence[str] | None = None,
    failure_rates: Mapping[str, Any] | None = None,
    floor: float = 0.0,
) -> bp.BreakPoint:
    """The break point the arms plant: `emojax.breakpoint.find_break_point` on the truths.

    Args:
      labels: [P] axis labels.
      truths: Δ name ('delta_mon/harmful_compliance', ...) -> [P] measured truths on the
        margins' scale (NaN where not estimable).
      margins: per Δ name or prefix, as for `find_break_point`.
      required: the Δ names the rule reads (default: every truth).
      failure_rates: failure type -> [P] measured failure rates (for 'failures eliminated');
        None: never eliminated.
      floor: the failure-rate floor.

    Returns:
      The planted `BreakPoint` (its interval is the point itself: one draw).
    """
    deltas = {k: zero_width(v) for k, v in truths.items()}
    rates = None
    if failure_rates is not None:
        rates = {}
        for t, v in failure_rates.items():
            z = zero_width(v)
            rates[t] = {"estimate": z["estimate"], "hi": z["hi"], "samples": z["samples"]}
    return bp.find_break_point(
        labels, deltas, margins, required=required, failure_rates=rates, floor=floor
    )
