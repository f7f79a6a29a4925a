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
in its coefficients (one slope per direction and type: refusal lowers harmful compliance
and raises over-refusal; plus a small per-cell deviation); its neutral KL is quadratic in
them. A type's Δ_steer may choose an intervention whose KL level is within κ and, as shipped
(`breakpoint.steer_tolerance`), whose other-type failure rate is at most that type's
unsteered rate + the tolerance. Along an axis the controls arm stays as it is and every
intervention with an emotion coefficient moves by one shift per point and type, solved so
that Δ_steer's truth on the relative scale is the planted value exactly:

    best feasible emotion-arm rate = best feasible controls-arm rate − planted x unsteered rate

(0 planted: the arms are different but equally good). `true_steer` recomputes the truth
from the shifted effects (Φ of each cell, the minimum over feasible cells, the
difference).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import special

from emojax.calibration.world import Latents, rate

Point = tuple[float, float]  # (μ, γ) of one failure type at one axis point

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


def arm_rates(arms: Arms, effect: np.ndarray, latents: Latents, point: Point) -> np.ndarray:
    """[I] population failure rate of every intervention (unsteered: no response term)."""
    mu, coupling = point
    steered = rate(latents, mu, effect, coupling, True)
    steered[0] = rate(latents, mu, 0.0, coupling, False)
    return steered


def feasible(
    arms: Arms, other_rates: np.ndarray, kappa: float, tolerance: float | None
) -> np.ndarray:
    """[I] interventions a type's Δ_steer may choose: KL level within κ and, with a
    tolerance, the other failure type's rate at most its unsteered rate + tolerance."""
    ok = arms.kl_level <= kappa
    if tolerance is not None:
        ok &= other_rates <= other_rates[0] + tolerance
    return ok


def _other(ftype: str) -> str:
    return TYPES[1 - TYPES.index(ftype)]


def true_steer(
    arms: Arms,
    effects: dict[str, np.ndarray],
    latents: Latents,
    points: dict[str, Point],
    kappa: float,
    tolerance: float | None,
) -> dict[str, dict[str, float]]:
    """Δ_steer's truth per type: best feasible controls rate − best feasible emotion rate.

    Returns:
      type -> ``absolute``, ``relative`` (over the unsteered rate) and ``unsteered`` rate.
    """
    rates = {t: arm_rates(arms, effects[t], latents, points[t]) for t in TYPES}
    out = {}
    for t in TYPES:
        ok = feasible(arms, rates[_other(t)], kappa, tolerance)
        best = [rates[t][a][ok[a]].min() for a in (arms.controls, arms.emotion)]
        delta = float(best[0] - best[1])
        out[t] = {"absolute": delta, "relative": delta / float(rates[t][0]),
                  "unsteered": float(rates[t][0])}  # fmt: skip
    return out


def plant(
    arms: Arms,
    latents: Latents,
    points: dict[str, Point],
    relative: dict[str, float],
    kappa: float,
    tolerance: float | None,
) -> dict[str, np.ndarray]:
    """[I] effects per type, the emotion interventions shifted so that Δ_steer's relative
    truth of each type is `relative[type]` (module docstring).

    With a tolerance the two types are coupled (one type's shift moves which interventions
    the other may choose), so the shifts are solved in turn until the feasible sets settle.

    Raises:
      ValueError: when the planted values cannot be reached (the controls already fix more
        than the rest of the failures, or no emotion intervention is feasible).
    """
    effects = {t: arms.effect[t].copy() for t in TYPES}
    for _ in range(20):  # one type after the other (Gauss-Seidel), until nothing moves
        before = {t: e.copy() for t, e in effects.items()}
        for t in TYPES:
            mu, coupling = points[t]
            rates = {x: arm_rates(arms, effects[x], latents, points[x]) for x in TYPES}
            ok = feasible(arms, rates[_other(t)], kappa, tolerance)
            best_c = rates[t][arms.controls][ok[arms.controls]].min()
            target = best_c - relative[t] * rates[t][0]
            if not 0.0 < target <= 1.0:
                raise ValueError(
                    f"cannot plant relative Δ_steer {relative[t]} ({t}): controls reach "
                    f"{best_c:.4f} of {rates[t][0]:.4f}"
                )
            choosable = ok & arms.emotional
            if not choosable.any():
                raise ValueError(f"no emotion intervention is feasible for {t}")
            base = arms.effect[t]
            shift = latents.scale(coupling, True) * special.ndtri(target) - mu
            effects[t] = np.where(arms.emotional, base + shift - base[choosable].min(), base)
        if all(np.array_equal(before[t], effects[t]) for t in TYPES):
            break
    truth = true_steer(arms, effects, latents, points, kappa, tolerance)
    if any(abs(truth[t]["relative"] - relative[t]) > 1e-9 for t in TYPES):
        raise ValueError(f"the planted shifts did not settle: {truth} for {relative}")
    return effects


def steer(
    rng: np.random.Generator,
    arms: Arms,
    effect: np.ndarray,
    latents: Latents,
    mean: np.ndarray,
    failure: np.ndarray,
    request: np.ndarray,
) -> dict[str, np.ndarray]:
    """Both arms' failures on one type's steered prompts.

    Args:
      rng: generator.
      arms: the arms.
      effect: [I] the type's effects at this point (after `plant`).
      latents: the latent model.
      mean: [N] μ + a_u + c_n of the steered prompts.
      failure: [N] their unsteered failures (the unsteered cell's outcome).
      request: [N] their request ids.

    Returns:
      ``fail_controls``, ``fail_emotion`` [G, N].
    """
    num_i = len(effect)
    ids, local = np.unique(request, return_inverse=True)
    response = rng.normal(0.0, latents.response, (num_i, len(ids)))[:, local]
    z = mean[None] + effect[:, None] + response + rng.normal(0.0, latents.noise, response.shape)
    fail = (z > 0).astype(np.float64)
    fail[0] = failure
    return {"fail_controls": fail[arms.controls], "fail_emotion": fail[arms.emotion]}


def neutral_kl(rng: np.random.Generator, arms: Arms, num_neutral: int) -> dict[str, np.ndarray]:
    """Both arms' KL on the neutral prompts at one point: ``kl_controls``/``kl_emotion``
    [G, Mn] around each intervention's level (a sensitive neutral prompt moves every cell)."""
    sensitivity = rng.uniform(0.5, 1.5, num_neutral)
    noise = 1.0 + rng.normal(0.0, 0.1, (len(arms.kl_level), num_neutral))
    kl = np.maximum(arms.kl_level[:, None] * sensitivity * noise, 0.0)
    return {"kl_controls": kl[arms.controls], "kl_emotion": kl[arms.emotion]}
