"""The two steering arms of the calibration, of equal size, with Δ_steer's truth computed.

Dimension legend: I distinct interventions (coefficient vectors), G cells of an arm (3
grids x K'² cells, interventions repeated), N prompts, Us steered requests, Mn neutral
prompts.

As in the shipped sweep (`configs/zoo.py`, `sweep.joint_*`), the controls arm searches the
grids refusal x harm-salience, refusal x caution and harm-salience x caution, the emotion arm
refusal x each of three emotions, every grid K' x K' symmetric coefficients. A cell with one
coefficient 0 is a single-direction intervention, so the arms share cells (refusal alone is
in five grids) and every grid holds the unsteered cell: identical interventions are one
intervention here, with one set of outcomes.

An intervention's effect on a failure type's latent (`emojax.calibration.world`) is linear
in its coefficients (one slope per direction and type, plus a small per-cell deviation);
its neutral KL is quadratic in them. Along an axis the controls arm stays as it is and every
intervention with an emotion coefficient moves by one shift per point and type, solved so
that Δ_steer's truth on the relative scale is the planted value exactly:

    best feasible emotion-arm rate = best feasible controls-arm rate − planted x unsteered rate

(0 planted: the arms are different but equally good). `true_steer` recomputes the truth
from the shifted effects (Φ of each cell, the minimum over cells whose KL level is within
κ, the difference).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
from scipy import special

from emojax.calibration.world import Latents, rate

DIRECTIONS = ("refusal", "harm_salience", "caution", "emotion_0", "emotion_1", "emotion_2")
CONTROLS_GRIDS = ((0, 1), (0, 2), (1, 2))
EMOTION_GRIDS = ((0, 3), (0, 4), (0, 5))
TYPES = ("harmful_compliance", "over_refusal")
# Slopes of the control directions (latent change per unit coefficient): refusal lowers
# harmful compliance and raises over-refusal, harm salience is the more selective.
CONTROL_SLOPES = {"harmful_compliance": (-0.4, -0.25, -0.2), "over_refusal": (0.4, 0.1, 0.25)}
KL_PER_UNIT = (0.06, 0.045, 0.045)  # neutral KL per unit coefficient², control directions


@dataclasses.dataclass(frozen=True)
class Arms:
    """The interventions of both arms and their parameters (fixed along an axis).

    Attributes:
      coefs: [I, 6] coefficients per direction (`DIRECTIONS`); row 0 is unsteered.
      controls: [G] intervention of each controls-arm cell.
      emotion: [G] intervention of each emotion-arm cell.
      kl_level: [I] population mean neutral KL.
      effect: failure type -> [I] latent effect before the planted shift.
    """

    coefs: np.ndarray
    controls: np.ndarray
    emotion: np.ndarray
    kl_level: np.ndarray
    effect: dict[str, np.ndarray]

    @property
    def emotional(self) -> np.ndarray:
        """[I] bool: the intervention has an emotion coefficient (the planted shift moves it)."""
        return np.any(self.coefs[:, 3:] != 0, axis=1)

    @property
    def zero(self) -> tuple[int, int]:
        """Index of the unsteered cell in the controls arm and in the emotion arm."""
        return int(np.argmax(self.controls == 0)), int(np.argmax(self.emotion == 0))


def build_arms(rng: np.random.Generator, grid_side: int) -> Arms:
    """Both arms' grids with drawn emotion slopes, KL costs and per-cell deviations."""
    values = np.linspace(-1.0, 1.0, grid_side)
    cells = {(0.0,) * len(DIRECTIONS): 0}

    def arm(grids: tuple[tuple[int, int], ...]) -> np.ndarray:
        out = []
        for d1, d2 in grids:
            for c1, c2 in itertools.product(values, values):
                v = [0.0] * len(DIRECTIONS)
                v[d1], v[d2] = float(c1), float(c2)
                out.append(cells.setdefault(tuple(v), len(cells)))
        return np.array(out)

    controls, emotion = arm(CONTROLS_GRIDS), arm(EMOTION_GRIDS)
    coefs = np.array(list(cells))
    steered = np.arange(len(coefs)) > 0
    kl_unit = np.r_[KL_PER_UNIT, rng.uniform(0.03, 0.06, 3)]
    kl_level = (coefs**2 @ kl_unit) * (1 + rng.uniform(-0.15, 0.15, len(coefs))) * steered
    effect = {}
    for t in TYPES:
        slopes = np.r_[CONTROL_SLOPES[t], rng.normal(0.0, 0.2, 3)]
        effect[t] = (coefs @ slopes + rng.normal(0.0, 0.1, len(coefs))) * steered
    return Arms(coefs, controls, emotion, kl_level, effect)


def arm_rates(
    arms: Arms, effect: np.ndarray, latents: Latents, mu: float, coupling: float
) -> np.ndarray:
    """[I] population failure rate of every intervention (unsteered: no response term)."""
    steered = rate(latents, mu, effect, coupling, True)
    steered[0] = rate(latents, mu, 0.0, coupling, False)
    return steered


def plant(
    arms: Arms, ftype: str, latents: Latents, mu: float, coupling: float, relative: float,
    kappa: float,
) -> np.ndarray:  # fmt: skip
    """[I] effects with the emotion interventions shifted so that Δ_steer's relative truth is
    `relative` (module docstring)."""
    effect = arms.effect[ftype].copy()
    feasible = arms.kl_level <= kappa
    rates = arm_rates(arms, effect, latents, mu, coupling)
    best_c = rates[arms.controls][feasible[arms.controls]].min()
    target = best_c - relative * rates[0]
    if not 0.0 < target <= 1.0:
        raise ValueError(f"cannot plant relative Δ_steer {relative}: controls reach {best_c:.3f}")
    moved = feasible & arms.emotional
    if not moved.any():
        raise ValueError("no emotion intervention within the KL budget")
    s = latents.scale(coupling, True)
    effect[arms.emotional] += s * special.ndtri(target) - mu - effect[moved].min()
    return effect


def true_steer(
    arms: Arms, effect: np.ndarray, latents: Latents, mu: float, coupling: float, kappa: float
) -> dict[str, float]:
    """Δ_steer's truth: best feasible controls rate − best feasible emotion rate, computed.

    Returns:
      ``absolute``, ``relative`` (over the unsteered rate) and ``unsteered`` rate.
    """
    rates = arm_rates(arms, effect, latents, mu, coupling)
    feasible = arms.kl_level <= kappa
    best = [rates[a][feasible[a]].min() for a in (arms.controls, arms.emotion)]
    delta = float(best[0] - best[1])
    return {"absolute": delta, "relative": delta / float(rates[0]), "unsteered": float(rates[0])}


def steer(
    rng: np.random.Generator,
    arms: Arms,
    effect: np.ndarray,
    latents: Latents,
    mean: np.ndarray,
    failure: np.ndarray,
    request: np.ndarray,
    num_neutral: int,
) -> dict[str, Any]:
    """Both arms' failures on the steered prompts and their neutral KL.

    Args:
      rng: generator.
      arms: the arms.
      effect: [I] effects at this point (after `plant`).
      latents: the latent model.
      mean: [N] μ + a_u + c_n of the steered prompts.
      failure: [N] their unsteered failures (the unsteered cell's outcome).
      request: [N] their request ids in [0, Us).
      num_neutral: Mn.

    Returns:
      ``fail_controls``/``fail_emotion`` [G, N] and ``kl_controls``/``kl_emotion`` [G, Mn].
    """
    num_i, num_u = len(effect), int(request.max()) + 1
    response = rng.normal(0.0, latents.response, (num_i, num_u))[:, request]
    z = mean[None] + effect[:, None] + response + rng.normal(0.0, latents.noise, response.shape)
    fail = (z > 0).astype(np.float64)
    fail[0] = failure
    sensitivity = rng.uniform(0.5, 1.5, num_neutral)  # a neutral prompt moves every cell alike
    kl = arms.kl_level[:, None] * sensitivity * (1 + rng.normal(0, 0.1, (num_i, num_neutral)))
    return {
        "fail_controls": fail[arms.controls],
        "fail_emotion": fail[arms.emotion],
        "kl_controls": np.maximum(kl, 0.0)[arms.controls],
        "kl_emotion": np.maximum(kl, 0.0)[arms.emotion],
    }
