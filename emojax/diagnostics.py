"""Per-point diagnostics of the break point (DESIGN.md §5): the policy-dominance index and the
three conditions of §0 (failures controlled by the policy, emotion effects mostly stylistic,
low alignment and selectivity).

Dimension legend: N prompts, F control features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np

Array = jax.Array


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
