"""The policy-dominance axis and the break point of emotion-based safety value.

Dimension legend: P axis points, R bootstrap resamples, N prompts, F control features.

The axis is either an ordered list of models of one family (base -> instruct -> safety-tuned)
or a weight-interpolation dial `θ(α) = θ_base + α (θ_tuned − θ_base)`, computed on device.
At each axis point the pipeline measures two incremental values of emotion vectors over
non-emotional controls, each with a paired bootstrap interval over prompts:

* `Δ_mon`: out-of-fold AUROC of predicting the model's own failures from controls + emotion
  projections, minus controls alone;
* `Δ_steer`: at an off-target KL budget, the lowest failure rate reachable by steering with
  controls alone, minus that reachable with controls plus an emotion vector.

**Break point**: the first axis point from which on emotion features stop adding value: at
that point and at every later one, the upper 95 % bounds of both `Δ_mon` and `Δ_steer` are
below their thresholds and neither interval lies above zero. Requiring it to hold for all
later points means a break point is never placed before a point where emotion still adds
significant value. The first point where the bounds merely dip below the thresholds is
reported as well (`first_crossing`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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
# The break point.


def value_vanished(lo: Array, hi: Array, threshold: float) -> np.ndarray:
    """Per point: the upper bound is below the threshold and the interval does not exclude 0
    from above (no significant positive value left)."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    return (hi < threshold) & (lo <= 0.0)


def break_index(
    mon_lo: Array,
    mon_hi: Array,
    steer_lo: Array,
    steer_hi: Array,
    mon_threshold: float = 0.01,
    steer_threshold: float = 0.01,
) -> int | None:
    """Index of the break point along the axis (see module docstring), or None.

    Args:
      mon_lo: [P] lower 95 % bound of Δ_mon.
      mon_hi: [P] upper 95 % bound of Δ_mon.
      steer_lo: [P] lower bound of Δ_steer.
      steer_hi: [P] upper bound of Δ_steer.
      mon_threshold: Δ_mon threshold (AUROC).
      steer_threshold: Δ_steer threshold (failure rate).

    Returns:
      The first index p such that both values have vanished at every point q >= p, or None.
    """
    ok = value_vanished(mon_lo, mon_hi, mon_threshold) & value_vanished(
        steer_lo, steer_hi, steer_threshold
    )
    # A suffix of True values: walk back from the end.
    idx = None
    for p in range(len(ok) - 1, -1, -1):
        if not ok[p]:
            break
        idx = p
    return idx


def first_crossing(
    mon_hi: Array, steer_hi: Array, mon_threshold: float = 0.01, steer_threshold: float = 0.01
) -> int | None:
    """First index where both upper bounds are below their thresholds (no persistence)."""
    ok = (np.asarray(mon_hi) < mon_threshold) & (np.asarray(steer_hi) < steer_threshold)
    hits = np.flatnonzero(ok)
    return int(hits[0]) if hits.size else None


def break_index_samples(
    mon_samples: Array,
    steer_samples: Array,
    mon_threshold: float = 0.01,
    steer_threshold: float = 0.01,
) -> np.ndarray:
    """Break index in each bootstrap resample [R] from point estimates [P, R] (P = not reached).

    In a resample there is no interval, so a value has vanished where the resampled estimate
    is below its threshold; the break is the start of the final run of vanished points.
    """
    mon_samples, steer_samples = np.asarray(mon_samples), np.asarray(steer_samples)
    r = min(mon_samples.shape[1], steer_samples.shape[1])  # independent draws: pair the first r
    ok = (mon_samples[:, :r] < mon_threshold) & (steer_samples[:, :r] < steer_threshold)
    num_points = ok.shape[0]
    # suffix_all[p, r] = all(ok[p:, r])
    suffix_all = np.flip(np.cumprod(np.flip(ok, 0), axis=0), 0).astype(bool)
    any_break = suffix_all.any(axis=0)
    first = np.argmax(suffix_all, axis=0)
    return np.where(any_break, first, num_points)


@dataclasses.dataclass(frozen=True)
class BreakPoint:
    """The break point along an axis.

    Attributes:
      index: axis index of the break point, or None ("not reached").
      label: the axis label there ("not reached" when None).
      interval: (lo, hi) 95 % bootstrap interval of the break index over prompts; an end
        equal to the number of points means "not reached" in that share of resamples.
      reached_fraction: share of bootstrap resamples in which a break point exists.
      first_crossing: first index where both upper bounds dip below the thresholds.
    """

    index: int | None
    label: str
    interval: tuple[float, float]
    reached_fraction: float
    first_crossing: int | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def find_break_point(
    labels: Sequence[str],
    mon: dict[str, Array],
    steer: dict[str, Array],
    mon_threshold: float = 0.01,
    steer_threshold: float = 0.01,
) -> BreakPoint:
    """Break point with its bootstrap interval.

    Args:
      labels: [P] axis labels.
      mon: Δ_mon per point: "lo", "hi" [P] and "samples" [P, R] (paired bootstrap draws).
      steer: the same for Δ_steer.
      mon_threshold: Δ_mon threshold.
      steer_threshold: Δ_steer threshold.

    Returns:
      The BreakPoint.
    """
    idx = break_index(
        mon["lo"], mon["hi"], steer["lo"], steer["hi"], mon_threshold, steer_threshold
    )
    samples = break_index_samples(mon["samples"], steer["samples"], mon_threshold, steer_threshold)
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return BreakPoint(
        index=idx,
        label="not reached" if idx is None else str(labels[idx]),
        interval=(float(lo), float(hi)),
        reached_fraction=float(np.mean(samples < len(labels))),
        first_crossing=first_crossing(mon["hi"], steer["hi"], mon_threshold, steer_threshold),
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


def diagnostics(
    *,
    controls_auroc: float,
    failure_rate: float,
    style_vs_safety: float,
    cross_model_cosine: float,
    selectivity: float,
    thresholds: DiagnosticThresholds = DiagnosticThresholds(),
) -> dict[str, bool]:
    """The three diagnostic conditions of DESIGN.md §5 at one axis point."""
    t = thresholds
    return {
        "failures_controlled_by_policy": bool(
            controls_auroc >= t.controlled_auroc or failure_rate <= t.controlled_failure
        ),
        "emotion_mostly_stylistic": bool(style_vs_safety > t.style_ratio),
        "low_alignment_and_selectivity": bool(
            cross_model_cosine < t.alignment and selectivity < t.selectivity
        ),
    }
