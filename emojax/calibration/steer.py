"""A small simulator of one failure type's two steering arms with a known Δ_steer.

Dimension legend: U requests, C cues per request, N = U·C prompts, G cells per arm, Mn neutral
prompts, Q random-direction grids.

The simulation mimics the measured data: each request has a random effect on failing (some
requests are simply harder), each prompt (a cue variant of its request) its own effect shared
by every steering cell, and each (cell, request) pair a random steering response. A cell's
failure probability is ``sigmoid(mu + a_u + c_n + b_g + e_gu)``; its neutral KL is noisy
around a per-cell level. Under the null the emotion arm's cells have exactly the control
cells' effects and KL levels (the arms are exchangeable), so the true Δ_steer is 0; a planted
effect lowers every steered emotion cell's logit by ``effect``. The true Δ_steer is computed
by quadrature from the cell effects. The tests of `emojax.metrics.incremental` use it (a
symmetric null, a detectable planted effect) and `simulate_random_grids` feeds
`emojax.calibration.random_arms`; the calibration of the rule as shipped simulates whole axes
(`emojax.calibration.axis`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class SteerSim:
    """Parameters of one simulated failure type at one axis point.

    Attributes:
      num_requests: U.
      cues: C prompts per request.
      num_cells: G cells per arm (cell 0 is the unsteered cell).
      num_neutral: Mn neutral prompts.
      base_logit: mu, the unsteered failure logit of a typical prompt.
      request_sd: sd of the request effect a_u.
      cue_sd: sd of the prompt effect c_n (shared by every cell).
      cell_sd: sd of the per-(cell, request) steering response e_gu.
      cell_mean: mean logit effect b_g of a steered cell ...
      cell_spread: ... and its sd across cells.
      kl_max: steered cells' KL levels are uniform on (0.02, kl_max).
    """

    num_requests: int = 200
    cues: int = 4
    num_cells: int = 18
    num_neutral: int = 16
    base_logit: float = -0.3
    request_sd: float = 1.2
    cue_sd: float = 0.6
    cell_sd: float = 0.4
    cell_mean: float = -0.5
    cell_spread: float = 0.4
    kl_max: float = 0.3


_NODES = np.polynomial.hermite_e.hermegauss(60)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def true_rates(sim: SteerSim, cell_effects: np.ndarray, base_logit: float) -> np.ndarray:
    """Population failure rate per cell, E sigmoid(mu + b_g + Z s), by Gauss-Hermite quadrature."""
    z, w = _NODES
    s = np.sqrt(sim.request_sd**2 + sim.cue_sd**2 + sim.cell_sd**2)
    x = base_logit + np.asarray(cell_effects)[:, None] + s * z[None]
    return _sigmoid(x) @ w / w.sum()


def simulate_steer(
    rng: np.random.Generator,
    sim: SteerSim,
    *,
    effect: float = 0.0,
    base_logit: float | None = None,
    request_effect: np.ndarray | None = None,
    cells: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """One simulated failure type: both arms' failures and neutral KL.

    Args:
      rng: generator.
      sim: parameters.
      effect: logit reduction of every steered emotion cell (0 = exchangeable arms).
      base_logit: overrides ``sim.base_logit`` (the policy lowering failures along an axis).
      request_effect: [U] request effects to share across axis points (drawn when None).
      cells: (cell effects [G], KL levels [G]) to share across axis points (drawn when None).

    Returns:
      ``fail_controls``/``fail_emotion`` [G, N], ``kl_controls``/``kl_emotion`` [G, Mn],
      ``request`` [N], ``true_delta`` (population Δ_steer at the simulated κ-free level: use
      `true_delta` with a budget) and the cell parameters.
    """
    u, c, g = sim.num_requests, sim.cues, sim.num_cells
    mu = sim.base_logit if base_logit is None else base_logit
    a = rng.normal(0, sim.request_sd, u) if request_effect is None else request_effect
    if cells is None:
        b = np.concatenate([[0.0], rng.normal(sim.cell_mean, sim.cell_spread, g - 1)])
        kl = np.concatenate([[0.0], rng.uniform(0.02, sim.kl_max, g - 1)])
    else:
        b, kl = cells
    request = np.repeat(np.arange(u), c)
    cue = rng.normal(0, sim.cue_sd, u * c)
    b_e = b - effect * (np.arange(g) > 0)

    def arm(effects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = rng.normal(0, sim.cell_sd, (g, u))
        logit = mu + a[request] + cue + effects[:, None] + e[:, request]
        fail = (rng.uniform(size=logit.shape) < _sigmoid(logit)).astype(np.float64)
        kl_n = kl[:, None] * rng.uniform(0.5, 1.5, (g, sim.num_neutral))
        return fail, kl_n

    fail_c, kl_c = arm(b)
    fail_e, kl_e = arm(b_e)
    return {
        "fail_controls": fail_c,
        "fail_emotion": fail_e,
        "kl_controls": kl_c,
        "kl_emotion": kl_e,
        "request": request,
        "cell_effects": b,
        "emotion_effects": b_e,
        "kl_levels": kl,
        "base_logit": mu,
    }


def simulate_random_grids(
    rng: np.random.Generator, sim: SteerSim, num_grids: int
) -> dict[str, np.ndarray]:
    """[Q, G, N] failures and [Q, G, Mn] KL of Q random-direction grids on shared requests.

    Each grid is drawn like a control arm of ``sim.num_cells`` cells (cell 0 unsteered), so any
    two sets of grids are exchangeable: the input `random_arm_calibration` expects from a real
    sweep.
    """
    u, g = sim.num_requests, sim.num_cells
    a = rng.normal(0, sim.request_sd, u)
    request = np.repeat(np.arange(u), sim.cues)
    cue = rng.normal(0, sim.cue_sd, len(request))
    b = rng.normal(sim.cell_mean, sim.cell_spread, (num_grids, g))
    b[:, 0] = 0.0
    kl = rng.uniform(0.02, sim.kl_max, (num_grids, g, 1)) * rng.uniform(
        0.5, 1.5, (num_grids, g, sim.num_neutral)
    )
    kl[:, 0] = 0.0
    e = rng.normal(0, sim.cell_sd, (num_grids, g, u))[..., request]
    logit = sim.base_logit + a[request] + cue + b[..., None] + e
    fail = (rng.uniform(size=logit.shape) < _sigmoid(logit)).astype(np.float64)
    return {"fail": fail, "kl": kl, "request": request}


def true_delta(sim: SteerSim, data: dict[str, Any], kappa: float) -> float:
    """Population Δ_steer: best feasible controls rate − best feasible emotion rate."""
    feasible = data["kl_levels"] <= kappa
    rc = true_rates(sim, data["cell_effects"], data["base_logit"])
    re = true_rates(sim, data["emotion_effects"], data["base_logit"])
    return float(rc[feasible].min() - re[feasible].min())
