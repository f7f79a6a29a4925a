"""The policy-dominance axis and the break point of emotion-based safety value.

Dimension legend: P axis points, R bootstrap draws (cluster draws over requests, paired across
points and statistics), D incremental values (Δ names), N prompts, F control features.

The axis is either an ordered list of models of one family (base -> instruct -> safety-tuned)
or a weight-interpolation dial `θ(α) = θ_base + α (θ_tuned − θ_base)`, computed on device.
At each axis point the pipeline measures incremental values of emotion vectors over
non-emotional controls, per failure type (harmful compliance, over-refusal), each with a
cluster-bootstrap interval over requests: `Δ_mon` (monitoring) and `Δ_steer` (steering).

**Estimability.** A failure type at a point with fewer than `min_failures` failing requests
(or fewer than `min_failures` non-failing ones) is *not estimable*: its Δ is not computed,
never taken as 0, and the break rule skips it.

**Break point** (DESIGN.md §5). Emotion value has vanished at a point when at least one Δ is
estimable there and the upper 95 % bound of every estimable Δ is below its margin (an
equivalence test). The break is the first estimable point from which that holds at every
later estimable point. Outcomes: `break`; `not reached`; `failures eliminated first` (no
break, and the last points have nothing estimable: the policy removed the failures before
emotion value was shown to vanish).

**Its interval** applies the same rule in each bootstrap draw. A full double bootstrap would
need an inner bootstrap per draw to get that draw's upper bound. The shortcut moves the
full-data upper half-width to the draw: ``hi*_r = samples[p, r] + (hi[p] − estimate[p])``.
It is exact when the sampling distribution of Δ − truth does not depend on the truth (the
pivot that the percentile/basic bootstrap interval already assumes), it costs no extra
refits, and it keeps one rule for the point and its interval. Estimability stays that of the
full data in every draw (it is a property of the design, not an inferred quantity). The
break index of every draw is an integer (P = no break), so its 2.5/97.5 % quantiles are
taken with `method='inverted_cdf'` (always an observed index) and reported as axis labels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax.config import ModelConfig
from emojax.params import Params

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# The dial.


class DialError(ValueError):
    """The two ends of a dial are not the same architecture / tokenizer."""


def check_dial_compatible(
    base_config: ModelConfig,
    tuned_config: ModelConfig,
    base_tokenizer=None,
    tuned_tokenizer=None,
) -> None:
    """Raises DialError unless the two checkpoints can be interpolated weight by weight."""
    fields = [f.name for f in dataclasses.fields(ModelConfig) if f.compare]
    diffs = [
        f"{name}: {getattr(base_config, name)!r} vs {getattr(tuned_config, name)!r}"
        for name in fields
        if name not in ("bos_token_id", "eos_token_id", "pad_token_id")
        and getattr(base_config, name) != getattr(tuned_config, name)
    ]
    if diffs:
        raise DialError("dial ends differ in architecture: " + "; ".join(diffs))
    if base_tokenizer is not None and tuned_tokenizer is not None:
        vb, vt = base_tokenizer.get_vocab(), tuned_tokenizer.get_vocab()
        if vb != vt:
            only = sorted(set(vb.items()) ^ set(vt.items()))[:5]
            raise DialError(f"dial ends have different tokenizers (e.g. {only})")


@jax.jit
def interpolate_params(base: Params, tuned: Params, alpha: Array) -> Params:
    """θ(α) = θ_base + α (θ_tuned − θ_base), leaf by leaf, in float32, cast back.

    α = 0 and α = 1 return the two ends exactly (the interpolation is written so that each
    end is reproduced bit for bit: `(1 − α) θ_base + α θ_tuned` would not be at α = 1 in
    floating point, `where` makes both ends exact).
    """
    alpha = jnp.asarray(alpha, jnp.float32)

    def mix(b, t):
        b32, t32 = b.astype(jnp.float32), t.astype(jnp.float32)
        out = b32 + alpha * (t32 - b32)
        out = jnp.where(alpha == 1.0, t32, out)
        return out.astype(b.dtype)

    return jax.tree.map(mix, base, tuned)


# ---------------------------------------------------------------------------------------------
# Policy-dominance index.


def policy_dominance_index(refusal_score: Array, controls: Array) -> float:
    """R² of the refusal score [N] explained by control projections [N, F] (OLS + intercept).

    High values mean the model's refusal behaviour is already a (linear) function of the
    non-emotional control directions, i.e. the policy dominates.
    """
    y = np.asarray(refusal_score, np.float64)
    x = np.asarray(controls, np.float64)
    x = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    total = np.square(y - y.mean()).sum()
    if total <= 0:
        return 0.0
    return float(1.0 - np.square(resid).sum() / total)


# ---------------------------------------------------------------------------------------------
# Estimability and the break point.

OUTCOMES = ("break", "not reached", "failures eliminated first")


def estimable(
    num_failing_requests: Any, num_requests: Any, min_failures: int = 10
) -> bool | np.ndarray:
    """Whether a failure type can be estimated: >= min_failures failing AND non-failing requests.

    Counts are of requests (clusters), not prompts: ten cue variants of one failing request are
    one failing request. Works elementwise on arrays (returns a bool array then).
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


def vanished(hi: Any, is_estimable: Any, margin: Any) -> np.ndarray:
    """Per point (and draw): some Δ is estimable and every estimable Δ has hi < its margin.

    Args:
      hi: [D, P, ...] upper bounds (NaN where not estimable; NaN where estimable counts as
        not below the margin).
      is_estimable: [D, P] bool.
      margin: [D] margins.

    Returns:
      [P, ...] bool.
    """
    hi = np.asarray(hi, np.float64)
    est = np.asarray(is_estimable, bool)
    est = est.reshape(est.shape + (1,) * (hi.ndim - est.ndim))
    margin = np.asarray(margin, np.float64).reshape((-1,) + (1,) * (hi.ndim - 1))
    with np.errstate(invalid="ignore"):
        below = hi < margin
    return est.any(0) & np.all(below | ~est, axis=0)


def break_index(is_vanished: Any, any_estimable: Any) -> np.ndarray:
    """First estimable point from which value has vanished at every later estimable point.

    Args:
      is_vanished: [P, ...] bool (`vanished`).
      any_estimable: [P] bool, some Δ estimable at the point.

    Returns:
      [...] int break index, P where there is none.
    """
    v = np.asarray(is_vanished, bool)
    est = np.asarray(any_estimable, bool).reshape((-1,) + (1,) * (v.ndim - 1))
    num_points = v.shape[0]
    pos = np.arange(num_points).reshape(est.shape)
    last_bad = np.where(est & ~v, pos, -1).max(0)  # last estimable point with value left
    candidate = est & (pos > last_bad)
    return np.where(candidate.any(0), np.argmax(candidate, axis=0), num_points)


@dataclasses.dataclass(frozen=True)
class BreakPoint:
    """The break point along an axis.

    Attributes:
      index: axis index of the break, or None when there is none.
      label: the axis label there, or None.
      outcome: 'break', 'not reached' or 'failures eliminated first'.
      interval: (label_lo, label_hi) 95 % interval of the break over request draws, as axis
        labels ('not reached' for draws with no break).
      interval_index: the same as integer indices (P = no break).
      reached_fraction: share of draws with a break.
      min_margin: per Δ name, per point, the smallest margin the data could confirm
        (hi − estimate, the upper half-width; None where not estimable): the power.
      estimable: per point, whether any Δ is estimable.
      vanished: per point, whether emotion value has vanished (False where not estimable).
      first_crossing: first estimable point where value has vanished (no persistence).
      margins: the margin used per Δ name.
      num_draws: draws used for the interval.
    """

    index: int | None
    label: str | None
    outcome: str
    interval: tuple[str, str]
    interval_index: tuple[int, int]
    reached_fraction: float
    min_margin: dict[str, list[float | None]]
    estimable: list[bool]
    vanished: list[bool]
    first_crossing: int | None
    margins: dict[str, float]
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


def find_break_point(
    labels: Sequence[str], deltas: Mapping[str, Mapping[str, Any]], margins: Mapping[str, float]
) -> BreakPoint:
    """The break point, its outcome, its interval (same rule per draw) and per-point power.

    Args:
      labels: [P] axis labels.
      deltas: per Δ name (e.g. 'delta_mon/harmful_compliance', 'delta_steer/over_refusal'):
        'estimate', 'lo', 'hi' [P], 'samples' [P, R] (NaN where not estimable; the draws of all
        names must come from one request-draw matrix so they are paired) and 'estimable' [P]
        bool. 'lo' is not used by the rule (an equivalence test needs only the upper bound).
      margins: per Δ name, or per prefix before '/' ('delta_steer').

    Returns:
      The BreakPoint.
    """
    labels = [str(x) for x in labels]
    num_points = len(labels)
    if not deltas:
        raise ValueError("no Δ given")
    names = list(deltas)
    est = np.stack([np.asarray(deltas[k]["estimate"], np.float64) for k in names])  # [D, P]
    hi = np.stack([np.asarray(deltas[k]["hi"], np.float64) for k in names])
    ok = np.stack([np.asarray(deltas[k]["estimable"], bool) for k in names])
    if est.shape != (len(names), num_points) or ok.shape != est.shape:
        raise ValueError(f"every Δ needs [P={num_points}] estimate, hi and estimable")
    margin = np.array([margin_for(k, margins) for k in names])
    draws = [np.asarray(deltas[k]["samples"], np.float64).reshape(num_points, -1) for k in names]
    r = min(d.shape[1] for d in draws)  # paired draws share their first r rows
    samples = np.stack([d[:, :r] for d in draws])  # [D, P, R]
    half = hi - est  # the upper half-width: the smallest margin the data can confirm

    any_est = ok.any(0)
    v = vanished(hi, ok, margin)
    index = int(break_index(v, any_est))
    if index < num_points:
        outcome = "break"
    elif not any_est.any() or not any_est[-1]:
        outcome = "failures eliminated first"
    else:
        outcome = "not reached"
    # The shortcut double bootstrap: each draw's upper bound is its estimate plus the
    # full-data upper half-width (see the module docstring).
    v_draws = vanished(samples + half[..., None], ok, margin)  # [P, R]
    idx_draws = break_index(v_draws, any_est)  # [R]
    if r:
        q = np.quantile(idx_draws, [0.025, 0.975], method="inverted_cdf")
        lo_i, hi_i = int(q[0]), int(q[1])
        reached = float(np.mean(idx_draws < num_points))
    else:
        lo_i = hi_i = index
        reached = float(index < num_points)
    name_of = lambda i: labels[i] if i < num_points else "not reached"
    crossing = np.flatnonzero(v)
    min_margin = {
        k: [float(h) if o and np.isfinite(h) else None for h, o in zip(half[d], ok[d], strict=True)]
        for d, k in enumerate(names)
    }
    return BreakPoint(
        index=index if index < num_points else None,
        label=labels[index] if index < num_points else None,
        outcome=outcome,
        interval=(name_of(lo_i), name_of(hi_i)),
        interval_index=(lo_i, hi_i),
        reached_fraction=reached,
        min_margin=min_margin,
        estimable=[bool(x) for x in any_est],
        vanished=[bool(x) for x in v],
        first_crossing=int(crossing[0]) if crossing.size else None,
        margins={k: float(m) for k, m in zip(names, margin, strict=True)},
        num_draws=int(r),
    )


# ---------------------------------------------------------------------------------------------
# Diagnostic conditions (DESIGN.md §5).


@dataclasses.dataclass(frozen=True)
class DiagnosticThresholds:
    """When each diagnostic condition is said to hold.

    Attributes:
      controlled_auroc: controls-only monitoring AUROC at or above this ...
      controlled_failure: ... or an unsteered failure rate at or below this: failures are
        already controlled by the policy and the controls.
      style_ratio: style-vs-safety ratio above this: emotion interventions mostly stylistic.
      alignment: cross-model cosine below this ...
      selectivity: ... and mean emotion selectivity below this: low alignment and selectivity.
    """

    controlled_auroc: float = 0.9
    controlled_failure: float = 0.05
    style_ratio: float = 1.0
    alignment: float = 0.5
    selectivity: float = 1.0


def _per_type(x: float | Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in x.items()} if isinstance(x, Mapping) else {"all": float(x)}


def diagnostics(
    *,
    controls_auroc: float | Mapping[str, float],
    failure_rate: float | Mapping[str, float],
    cross_model_cosine: float,
    selectivity: float,
    style_vs_safety: float | None = None,
    style_effect: tuple[float, float] | None = None,
    safety_effect: Mapping[str, tuple[float, float]] | tuple[float, float] | None = None,
    thresholds: DiagnosticThresholds = DiagnosticThresholds(),
) -> dict[str, bool]:
    """The three diagnostic conditions of DESIGN.md §5 at one axis point.

    Args:
      controls_auroc: controls-only monitoring AUROC, or a dict per failure type (NaN where
        not estimable).
      failure_rate: unsteered failure rate, or a dict per failure type (same keys).
      cross_model_cosine: emotion-vector cosine with the reference axis point.
      selectivity: mean emotion selectivity.
      style_vs_safety: style/safety effect ratio; used only when the intervals are not given
        (None or NaN: not defined, the condition does not hold).
      style_effect: (lo, hi) interval of the emotion's style effect.
      safety_effect: (lo, hi) interval of its safety effect, or a dict per failure type.
      thresholds: when each condition holds.

    Returns:
      ``failures_controlled_by_policy`` (every failure type: controls AUROC >= threshold or
      failure rate <= threshold), ``emotion_mostly_stylistic`` (with intervals: the style
      effect's interval excludes 0 and every safety effect's interval contains 0; else the
      ratio above its threshold) and ``low_alignment_and_selectivity``.
    """
    t = thresholds
    auc, rate = _per_type(controls_auroc), _per_type(failure_rate)
    controlled = all(
        auc.get(k, float("nan")) >= t.controlled_auroc
        or rate.get(k, float("nan")) <= t.controlled_failure
        for k in set(auc) | set(rate)
    )
    if style_effect is not None and safety_effect is not None:
        safety = safety_effect if isinstance(safety_effect, Mapping) else {"all": safety_effect}
        style_sig = style_effect[0] > 0 or style_effect[1] < 0
        stylistic = style_sig and all(lo <= 0 <= hi for lo, hi in safety.values())
    else:
        ratio = float("nan") if style_vs_safety is None else float(style_vs_safety)
        stylistic = ratio > t.style_ratio
    return {
        "failures_controlled_by_policy": bool(controlled),
        "emotion_mostly_stylistic": bool(stylistic),
        "low_alignment_and_selectivity": bool(
            cross_model_cosine < t.alignment and selectivity < t.selectivity
        ),
    }
