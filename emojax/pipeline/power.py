"""The power preflight of one axis point: before its sweep, the smallest margin each required
Δ can confirm from the unsteered failure counts (`emojax.metrics.power`), printed, recorded,
and refused with `breakpoint.require_power`.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from emojax import stats
from emojax.metrics import power
from emojax.pipeline.evalset import FAILURE_TYPES, TYPE_KINDS, EvalSet
from emojax.pipeline.stratify import SteeredSample


class PowerError(ValueError):
    """A required Δ cannot confirm its margin at this size (`breakpoint.require_power`)."""


def scale_of(cfg, stat: str) -> str:
    """The scale ('absolute' / 'relative') the break rule reads `stat` ('delta_mon', ...) on."""
    b = cfg.breakpoint
    return str(b.get("mon_scale" if stat == "delta_mon" else "steer_scale", "absolute"))


def margin_of(cfg, stat: str) -> float:
    """The margin of `stat` on its scale."""
    b = cfg.breakpoint
    return float(b.mon_margin if stat == "delta_mon" else b.steer_margin)


def _policy_auroc(behaviour: dict, sel: np.ndarray, ftype: str) -> float:
    """AUROC of the policy logit alone for one failure type (a stand-in for the controls')."""
    y = np.asarray(behaviour[ftype])[sel]
    if y.min() == y.max():
        return float("nan")
    a = float(stats.auroc(np.asarray(behaviour["policy_logit"])[sel], y))
    return max(a, 1.0 - a)


def power_preflight(
    behaviour: dict, evalset: EvalSet, sample: SteeredSample, rates: dict, cfg, label: str
) -> dict[str, dict]:
    """Smallest confirmable margin per Δ name, on the rule's scale, before the sweep.

    Args:
      behaviour: the unsteered behaviour on `evalset` (failure labels, policy logit).
      evalset: the point's evaluation set.
      sample: the steered requests chosen for the sweep (their strata).
      rates: the unsteered failure rates per type (`values.failure_rates`).
      cfg: the run's config (`breakpoint.required`, margins, scales, `require_power`).
      label: the axis point (for messages).

    Returns:
      Δ name -> {"smallest_margin", "margin", "scale", "powered", "required"}.

    Raises:
      PowerError: with `breakpoint.require_power`, when a required Δ is underpowered.
    """
    b = cfg.breakpoint
    required = set(b.get("required", ()))
    kinds = np.array([q.kind for q in evalset.items])
    out = {}
    for ftype in FAILURE_TYPES:
        sel = np.isin(kinds, TYPE_KINDS[ftype])
        req = evalset.request[sel]
        y = np.asarray(behaviour[ftype])[sel] > 0.5
        n_fail = len(np.unique(req[y]))
        n_ok = len(np.unique(req[~y]))
        auc = _policy_auroc(behaviour, sel, ftype)
        mon = power.mon_margin(n_fail, n_ok, auc if np.isfinite(auc) else 0.5,
                               scale=scale_of(cfg, "delta_mon"),
                               min_denominator=float(b.get("mon_min_headroom", 0.0)))  # fmt: skip
        strata = {k: tuple(v) for k, v in sample.strata[ftype].items()}
        steer = power.steer_margin(strata, rates[ftype]["estimate"],
                                   scale=scale_of(cfg, "delta_steer"),
                                   min_denominator=float(b.get("steer_min_rate", 0.0)))  # fmt: skip
        for stat, smallest in (("delta_mon", mon), ("delta_steer", steer)):
            name = f"{stat}/{ftype}"
            m = margin_of(cfg, stat)
            out[name] = {"smallest_margin": float(smallest), "margin": m,
                         "scale": scale_of(cfg, stat), "powered": bool(smallest <= m),
                         "required": name in required}  # fmt: skip
    weak = [k for k, v in out.items() if v["required"] and not v["powered"]]
    lines = ", ".join(f"{k} {v['smallest_margin']:.3g} (margin {v['margin']:g} {v['scale']})"
                      for k, v in out.items())  # fmt: skip
    logging.info("power preflight at %s: smallest confirmable margins: %s", label, lines)
    if weak:
        msg = (
            f"at {label}, {', '.join(weak)} cannot confirm its margin with these request "
            "counts (see the power preflight above): more requests, or a larger margin"
        )
        if b.get("require_power", False):
            raise PowerError(msg + " (breakpoint.require_power=True refuses)")
        logging.warning("underpowered: %s", msg)
    return out
