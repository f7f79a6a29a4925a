"""The break point: where emotion-based safety value stops, read from statuses, never from gaps.

Dimension legend: P axis points, R bootstrap draws (cluster draws over requests, paired across
points and statistics), D incremental values (Δ names such as 'delta_steer/over_refusal').

**Statuses** (DESIGN.md §5). Every (Δ, point) has exactly one:

* ``failures eliminated``: the Δ's failure type is too rare at the point to matter (the upper
  95 % bound of its failure rate is below ``floor``);
* ``vanished``: the upper bound of the Δ is below its margin (an equivalence test; this takes
  precedence over ``present``);
* ``present``: otherwise, the interval excludes 0 on the positive side;
* ``undetermined``: not estimable, or the interval straddles the margin (lo <= 0 and
  hi >= margin).

A not-estimable Δ is ``undetermined``: missing data can never pass the rule.

**Break point**, per failure type over its required Δs (``breakpoint.required``): a point is
*gone* when every required Δ of the type is ``vanished`` or ``failures eliminated``, *kept*
when one is ``present``, and *open* otherwise. With q the last point that is not gone:

* no such q: ``break`` at the first point (value was never shown);
* q kept and q < P − 1: ``break`` at q + 1 (``failures eliminated first`` when the failures
  were eliminated there, before value was shown to vanish: condition (1) of §0 alone);
* q kept and q = P − 1: ``not reached``;
* q open: ``insufficient data`` (the rule needs that point's status and the data cannot
  give it).

Across failure types: ``not reached`` if any type keeps value at the end; else
``insufficient data`` if any type lacks it; else ``failures eliminated first`` if every
type's failures went first; else ``break`` at the latest per-type break.

**Its interval** applies the same rule in each bootstrap draw, estimability and elimination
included (their per-draw values come with the inputs). A full double bootstrap would need an
inner bootstrap per draw to get that draw's bounds; the shortcut moves the full-data
half-widths to the draw: ``hi*_r = samples[p, r] + (hi[p] − estimate[p])`` (likewise for lo
and for the failure rate's upper bound). It is exact when the sampling distribution of
Δ − truth does not depend on the truth (the pivot that the basic bootstrap interval already
assumes) and keeps one rule for the point and its interval. Each draw's outcome is coded as
an index (break at b: b; ``not reached``: P; ``insufficient data``: P + 1), whose 2.5/97.5 %
quantiles (``method='inverted_cdf'``, always an observed code) are reported as labels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Moved to their own modules; re-exported because callers know them as `breakpoint.*`.
from emojax.diagnostics import (  # noqa: F401
    DiagnosticThresholds,
    diagnostics,
    policy_dominance_index,
)
from emojax.dial import DialError, check_dial_compatible, interpolate_params  # noqa: F401

STATUSES = ("present", "vanished", "failures eliminated", "undetermined")
PRESENT, VANISHED, ELIMINATED, UNDETERMINED = range(4)
OUTCOMES = ("break", "not reached", "failures eliminated first", "insufficient data")
# Point states of one failure type.
_GONE, _KEPT, _OPEN = range(3)


def estimable(
    num_failing_requests: Any, num_requests: Any, min_failures: int = 10
) -> bool | np.ndarray:
    """Whether a classifier-type Δ (Δ_mon) can be estimated: >= min_failures failing AND
    non-failing requests.

    Counts are of requests (clusters), not prompts: ten cue variants of one failing request are
    one failing request. Works elementwise on arrays (returns a bool array then). A failure-rate
    reduction (Δ_steer) needs only failing requests: `estimable(f, f + min_failures, ...)`.
    """
    f = np.asarray(num_failing_requests)
    n = np.asarray(num_requests)
    ok = (f >= min_failures) & (n - f >= min_failures)
    return bool(ok) if ok.ndim == 0 else ok


def margin_for(name: str, margins: Mapping[str, float]) -> float:
    """The margin of Δ `name` ('delta_steer/over_refusal'): its own entry, else its prefix's."""
    if name in margins:
        return float(margins[name])
    head = name.split("/")[0]
    if head in margins:
        return float(margins[head])
    raise KeyError(f"no margin for {name!r} (nor {head!r}) in {sorted(margins)}")


def failure_type_of(name: str) -> str:
    """'delta_steer/over_refusal' -> 'over_refusal' (the whole name when it has no '/')."""
    return name.split("/", 1)[-1]


def delta_status(lo: Any, hi: Any, margin: Any, is_estimable: Any, eliminated: Any) -> np.ndarray:
    """The status code (index into `STATUSES`) of Δs, elementwise.

    Args:
      lo, hi: interval bounds (NaN where not estimable).
      margin: the equivalence margin (broadcast).
      is_estimable: bool.
      eliminated: bool, the Δ's failure type is too rare to matter at the point.

    Returns:
      int array: ELIMINATED > VANISHED > PRESENT > UNDETERMINED, in that precedence. NaN
      bounds of an estimable Δ are undetermined.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    est = np.asarray(is_estimable, bool)
    with np.errstate(invalid="ignore"):
        gone = est & (hi < margin)
        kept = est & (lo > 0)
    out = np.full(np.broadcast_shapes(lo.shape, hi.shape, est.shape), UNDETERMINED, np.int8)
    out = np.where(kept, PRESENT, out)
    out = np.where(gone, VANISHED, out)
    return np.where(np.asarray(eliminated, bool), ELIMINATED, out).astype(np.int8)


def _point_state(status: np.ndarray) -> np.ndarray:
    """[D, P, ...] statuses of one type's required Δs -> [P, ...] gone / kept / open."""
    gone = np.isin(status, (VANISHED, ELIMINATED)).all(0)
    kept = (status == PRESENT).any(0)
    return np.where(gone, _GONE, np.where(kept, _KEPT, _OPEN))


def type_break(status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rule for one failure type, over its required Δs, per draw.

    Args:
      status: [D, P, ...] status codes of the type's required Δs.

    Returns:
      (outcome [...] index into `OUTCOMES`, break index [...]: the break (or elimination)
      point; P where there is none).
    """
    state = _point_state(status)
    num_points = state.shape[0]
    pos = np.arange(num_points).reshape((-1,) + (1,) * (state.ndim - 1))
    last = np.where(state != _GONE, pos, -1).max(0)  # last point not gone
    last_state = np.take_along_axis(state, np.maximum(last, 0)[None], 0)[0]
    b = last + 1
    at_b = np.take_along_axis(status, np.minimum(b, num_points - 1)[None, None], 1)[:, 0]
    eliminated_at_b = (at_b == ELIMINATED).all(0)
    outcome = np.where(eliminated_at_b, 2, 0)  # break, or failures eliminated first
    outcome = np.where((last == num_points - 1) & (last_state == _KEPT), 1, outcome)
    outcome = np.where((last >= 0) & (last_state == _OPEN), 3, outcome)
    index = np.where(np.isin(outcome, (0, 2)), b, num_points)
    return outcome, index


def combine_types(outcomes: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-type outcomes / indices [T, ...] -> the overall outcome and break index [...]."""
    not_reached = (outcomes == 1).any(0)
    missing = (outcomes == 3).any(0)
    all_eliminated = (outcomes == 2).all(0)
    index = np.where(np.isin(outcomes, (0, 2)), indices, -1).max(0)
    outcome = np.where(all_eliminated, 2, 0)
    outcome = np.where(missing, 3, outcome)
    outcome = np.where(not_reached, 1, outcome)
    return outcome, index


@dataclasses.dataclass(frozen=True)
class BreakPoint:
    """The break point along an axis, its statuses and its interval.

    Attributes:
      index: axis index of the break (or of the elimination, for 'failures eliminated
        first'), or None.
      label: the axis label there, or None.
      outcome: one of `OUTCOMES`.
      per_type: failure type -> {"outcome", "index", "label"} (the rule per type).
      required: the Δ names the rule reads.
      status: per Δ name, one status (`STATUSES`) per axis point.
      estimable: per Δ name, per point.
      interval: (label_lo, label_hi) 95 % interval over request draws, as axis labels,
        'not reached' or 'insufficient data'.
      interval_index: the same as codes (b; P = not reached; P + 1 = insufficient data).
      reached_fraction: share of draws whose outcome is 'break'.
      draw_outcomes: outcome -> share of draws.
      min_margin: per Δ name, per point, the smallest margin the data could confirm
        (hi − estimate; None where not estimable): the realised power.
      margins: the margin per Δ name (on the scale of the Δs given).
      floor: the failure-rate floor below which a type counts as eliminated.
      num_draws: draws used for the interval.
    """

    index: int | None
    label: str | None
    outcome: str
    per_type: dict[str, dict[str, Any]]
    required: list[str]
    status: dict[str, list[str]]
    estimable: dict[str, list[bool]]
    interval: tuple[str, str]
    interval_index: tuple[int, int]
    reached_fraction: float
    draw_outcomes: dict[str, float]
    min_margin: dict[str, list[float | None]]
    margins: dict[str, float]
    floor: float
    num_draws: int

    def to_json(self) -> dict:
        """A JSON-ready dict (tuples as lists, NaN as None)."""

        def clean(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [clean(v) for v in x]
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return clean(dataclasses.asdict(self))


def _rows(deltas: Mapping[str, Mapping[str, Any]], key: str, names: list[str]) -> np.ndarray:
    return np.stack([np.asarray(deltas[k][key], np.float64) for k in names])


def _eliminated(
    failure_rates: Mapping[str, Mapping[str, Any]] | None,
    types: list[str],
    floor: float,
    num_points: int,
    r: int,
) -> tuple[np.ndarray, np.ndarray]:
    """[T, P] and [T, P, R]: the type's failure-rate upper bound is below `floor`."""
    full = np.zeros((len(types), num_points), bool)
    draws = np.zeros((len(types), num_points, r), bool)
    if not failure_rates or floor <= 0:
        return full, draws
    for i, t in enumerate(types):
        if t not in failure_rates:
            continue
        fr = failure_rates[t]
        est, hi = np.asarray(fr["estimate"], np.float64), np.asarray(fr["hi"], np.float64)
        full[i] = hi < floor
        s = np.asarray(fr.get("samples", est[:, None]), np.float64).reshape(num_points, -1)
        s = s[:, :r] if s.shape[1] >= r else np.repeat(s[:, :1], r, 1)
        draws[i] = s + (hi - est)[:, None] < floor
    return full, draws


def find_break_point(
    labels: Sequence[str],
    deltas: Mapping[str, Mapping[str, Any]],
    margins: Mapping[str, float],
    *,
    required: Sequence[str] | None = None,
    failure_rates: Mapping[str, Mapping[str, Any]] | None = None,
    floor: float = 0.0,
) -> BreakPoint:
    """The break point, its outcome, statuses and interval (same rule per draw).

    Args:
      labels: [P] axis labels.
      deltas: per Δ name ('delta_mon/harmful_compliance', ...): 'estimate', 'lo', 'hi' [P],
        'samples' [P, R] (NaN where not estimable; one request-draw matrix for every name, so
        they are paired), 'estimable' [P] bool and optionally 'estimable_draws' [P, R] bool
        (estimability in each draw; default: that of the full data).
      margins: per Δ name, or per prefix before '/' ('delta_steer'), on the Δs' scale.
      required: the Δ names the rule reads (default: every name of `deltas`). A required
        name missing from `deltas` raises.
      failure_rates: per failure type: 'estimate', 'hi' [P] and 'samples' [P, R] of the
        type's failure rate (for 'failures eliminated'); None: never eliminated.
      floor: failure-rate floor (0: never eliminated).

    Returns:
      The BreakPoint.
    """
    labels = [str(x) for x in labels]
    num_points = len(labels)
    if not deltas:
        raise ValueError("no Δ given")
    required = list(deltas if required is None else required)
    missing = [k for k in required if k not in deltas]
    if missing:
        raise KeyError(f"required Δ {missing} not among the values {sorted(deltas)}")
    names = list(deltas)
    est, lo, hi = (_rows(deltas, k, names) for k in ("estimate", "lo", "hi"))
    ok = np.stack([np.asarray(deltas[k]["estimable"], bool) for k in names])
    if est.shape != (len(names), num_points) or ok.shape != est.shape:
        raise ValueError(f"every Δ needs [P={num_points}] estimate, lo, hi and estimable")
    margin = np.array([margin_for(k, margins) for k in names])
    draws = [np.asarray(deltas[k]["samples"], np.float64).reshape(num_points, -1) for k in names]
    r = min(d.shape[1] for d in draws)  # paired draws share their first r rows
    samples = np.stack([d[:, :r] for d in draws])  # [D, P, R]
    ok_draws = np.stack([
        np.asarray(deltas[k].get("estimable_draws", np.repeat(ok[i][:, None], r, 1)), bool)
        .reshape(num_points, -1)[:, :r] for i, k in enumerate(names)
    ]) & ok[..., None]  # fmt: skip

    types = list(dict.fromkeys(failure_type_of(k) for k in required))
    elim, elim_draws = _eliminated(failure_rates, types, floor, num_points, r)
    type_of = {t: i for i, t in enumerate(types)}
    elim_d = np.stack([elim[type_of[failure_type_of(k)]] if k in required
                       else np.zeros(num_points, bool) for k in names])  # fmt: skip
    elim_dr = np.stack([elim_draws[type_of[failure_type_of(k)]] if k in required
                        else np.zeros((num_points, r), bool) for k in names])  # fmt: skip
    m = margin[:, None]
    status = delta_status(lo, hi, m, ok, elim_d)  # [D, P]
    # The shortcut double bootstrap: each draw's bounds are its sample plus the full-data
    # half-widths (module docstring).
    lo_r = samples - (est - lo)[..., None]
    hi_r = samples + (hi - est)[..., None]
    status_r = delta_status(lo_r, hi_r, m[..., None], ok_draws, elim_dr)  # [D, P, R]

    per_type, outs, idxs, outs_r, idxs_r = {}, [], [], [], []
    for t in types:
        rows = [i for i, k in enumerate(names) if k in required and failure_type_of(k) == t]
        o, b = type_break(status[rows])
        o_r, b_r = type_break(status_r[rows])
        outs.append(o), idxs.append(b), outs_r.append(o_r), idxs_r.append(b_r)
        b = int(b)
        per_type[t] = {"outcome": OUTCOMES[int(o)], "index": b if b < num_points else None,
                       "label": labels[b] if b < num_points else None}  # fmt: skip
    outcome, index = (int(x) for x in combine_types(np.array(outs), np.array(idxs)))
    outcome_r, index_r = combine_types(np.stack(outs_r), np.stack(idxs_r))
    code_r = np.where(np.isin(outcome_r, (0, 2)), index_r, np.where(outcome_r == 1, num_points,
                                                                   num_points + 1))  # fmt: skip
    code = index if outcome in (0, 2) else num_points if outcome == 1 else num_points + 1
    if r:
        q = np.quantile(code_r, [0.025, 0.975], method="inverted_cdf")
        lo_i, hi_i = int(q[0]), int(q[1])
        reached = float(np.mean(outcome_r == 0))
        shares = {o: float(np.mean(outcome_r == i)) for i, o in enumerate(OUTCOMES)}
    else:
        lo_i = hi_i = code
        reached = float(outcome == 0)
        shares = {o: float(outcome == i) for i, o in enumerate(OUTCOMES)}

    def name_of(c: int) -> str:
        return labels[c] if c < num_points else OUTCOMES[1] if c == num_points else OUTCOMES[3]

    half = hi - est
    min_margin = {
        k: [float(h) if o and np.isfinite(h) else None for h, o in zip(half[d], ok[d], strict=True)]
        for d, k in enumerate(names)
    }
    has_index = outcome in (0, 2)
    return BreakPoint(
        index=index if has_index else None,
        label=labels[index] if has_index else None,
        outcome=OUTCOMES[outcome],
        per_type=per_type,
        required=required,
        status={k: [STATUSES[s] for s in status[d]] for d, k in enumerate(names)},
        estimable={k: [bool(x) for x in ok[d]] for d, k in enumerate(names)},
        interval=(name_of(lo_i), name_of(hi_i)),
        interval_index=(lo_i, hi_i),
        reached_fraction=reached,
        draw_outcomes=shares,
        min_margin=min_margin,
        margins={k: float(x) for k, x in zip(names, margin, strict=True)},
        floor=float(floor),
        num_draws=int(r),
    )
