"""Calibration of Δ_steer and of the break rule on simulated clustered data with known truth.

Dimension legend: U requests, C cues per request, N = U·C prompts, G cells per arm, Mn neutral
prompts, P axis points, R bootstrap draws, Q random-direction grids.

The simulation mimics the measured data: each request has a random effect on failing (some
requests are simply harder), each prompt (a cue variant of its request) its own effect shared
by every steering cell, and each (cell, request) pair a random steering response. A cell's
failure probability is ``sigmoid(mu + a_u + c_n + b_g + e_gu)``; its neutral KL is noisy
around a per-cell level. Under the null the emotion arm's cells have exactly the control
cells' effects and KL levels (the arms are exchangeable), so the true Δ_steer is 0; a planted
effect lowers every steered emotion cell's logit by ``effect``. The true Δ_steer is computed
by quadrature from the cell effects.

Measured over seeds (DESIGN.md §5, calibration): coverage of the truth by the 95 % Δ_steer
interval, the false "significant" rate (lo > 0 under the null), and the break rule's outcome
on axes with planted answers (`null`: break at the first point; `persistent`: not reached;
`marginal`: value just above the margin everywhere, the equivalence test's boundary, not
reached; `vanishing`: break where the coupling stops; `eliminated`: failures vanish while
coupling persists). A monitoring null (`monitor_study`) runs Δ_mon with plain NumPy L2
logistic probes (grouped folds, refits in every cluster draw) on data where emotion features
predict failures only through the controls. `random_arm_calibration` is the hook for a
second source: two arms of real random-direction grids (exchangeable by construction) from a
real sweep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from emojax import breakpoint as bp
from emojax import stats
from emojax.metrics import incremental


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


# ---------------------------------------------------------------------------------------------
# Δ_steer interval calibration.


def steer_study(
    seeds: Sequence[int],
    *,
    effect: float = 0.0,
    sim: SteerSim = SteerSim(),
    kappa: float = 0.15,
    num_draws: int = 400,
    num_folds: int = 5,
    num_splits: int = 4,
) -> dict[str, Any]:
    """Coverage and false-positive rate of the 95 % Δ_steer interval over simulated seeds.

    Returns:
      ``coverage_truth`` (interval contains the true Δ), ``coverage_zero``,
      ``significant`` (lo > 0), ``negative`` (hi < 0), ``mean_estimate``, ``mean_truth``,
      ``positive_fraction`` (estimate > 0), ``mean_half_width`` and per-seed arrays.
    """
    rows = []
    for seed in seeds:
        rng = np.random.default_rng((seed, 11))
        data = simulate_steer(rng, sim, effect=effect)
        out = incremental.delta_steer(
            data["fail_controls"], data["fail_emotion"], data["kl_controls"],
            data["kl_emotion"], data["request"], kappa, num_requests=sim.num_requests,
            num_draws=num_draws, num_folds=num_folds, num_splits=num_splits, seed=seed,
        )  # fmt: skip
        truth = true_delta(sim, data, kappa)
        rows.append((out["estimate"], out["lo"], out["hi"], truth))
    est, lo, hi, truth = np.array(rows).T
    return {
        "num_seeds": len(rows),
        "effect": effect,
        "coverage_truth": float(np.mean((lo <= truth) & (truth <= hi))),
        "coverage_zero": float(np.mean((lo <= 0) & (0 <= hi))),
        "significant": float(np.mean(lo > 0)),
        "negative": float(np.mean(hi < 0)),
        "positive_fraction": float(np.mean(est > 0)),
        "mean_estimate": float(np.mean(est)),
        "mean_truth": float(np.mean(truth)),
        "mean_half_width": float(np.mean(hi - est)),
        "estimate": est,
        "lo": lo,
        "hi": hi,
        "truth": truth,
    }


# ---------------------------------------------------------------------------------------------
# Break-rule calibration on simulated axes.


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A simulated axis with a planted answer.

    Attributes:
      name: scenario name.
      effects: [P] planted emotion advantage (logits) per point.
      base_logits: [P] unsteered failure logit per point (the policy along the axis).
      expected: the right answer: an axis index, or an outcome ('not reached',
        'failures eliminated first').
    """

    name: str
    effects: tuple[float, ...]
    base_logits: tuple[float, ...]
    expected: int | str


SCENARIOS = (
    Scenario("null", (0.0, 0.0, 0.0, 0.0), (0.3, 0.0, -0.3, -0.6), 0),
    Scenario("persistent", (2.0, 2.0, 2.0, 2.0), (0.3, 0.0, -0.3, -0.6), "not reached"),
    Scenario("marginal", (1.0, 1.0, 1.0, 1.0), (0.3, 0.0, -0.3, -0.6), "not reached"),
    Scenario("vanishing", (2.0, 2.0, 0.0, 0.0), (0.3, 0.0, -0.3, -0.6), 2),
    Scenario("eliminated", (2.0, 2.0, 2.0, 2.0), (0.3, 0.0, -9.0, -9.0),
             "failures eliminated first"),
)  # fmt: skip


def simulate_axis(
    seed: int,
    scenario: Scenario,
    *,
    sim: SteerSim = SteerSim(),
    kappa: float = 0.15,
    num_draws: int = 400,
    min_failures: int = 10,
    num_folds: int = 5,
    num_splits: int = 2,
) -> dict[str, Any]:
    """Δ_steer at every point of a simulated axis, on one shared request-draw matrix.

    The same requests (and request effects) appear at every point, as in a real sweep, and
    one matrix of request draws is shared by all points so the break interval is paired.

    Returns:
      ``deltas`` (the `find_break_point` input for 'delta_steer/harmful_compliance') and
      ``truth`` [P] (population Δ_steer per point).
    """
    rng = np.random.default_rng((seed, 13))
    a = rng.normal(0, sim.request_sd, sim.num_requests)
    g = sim.num_cells
    cells = (
        np.concatenate([[0.0], rng.normal(sim.cell_mean, sim.cell_spread, g - 1)]),
        np.concatenate([[0.0], rng.uniform(0.02, sim.kl_max, g - 1)]),
    )
    weights = stats.request_draws(sim.num_requests, num_draws, seed)
    keys = ("estimate", "lo", "hi")
    out: dict[str, list] = {k: [] for k in (*keys, "samples", "estimable")}
    truth = []
    for effect, base in zip(scenario.effects, scenario.base_logits, strict=True):
        data = simulate_steer(
            rng, sim, effect=effect, base_logit=base, request_effect=a, cells=cells
        )
        truth.append(true_delta(sim, data, kappa))
        d = incremental.delta_steer(
            data["fail_controls"], data["fail_emotion"], data["kl_controls"],
            data["kl_emotion"], data["request"], kappa, num_requests=sim.num_requests,
            weights=weights, num_folds=num_folds, num_splits=num_splits, seed=seed,
        )  # fmt: skip
        ok = bp.estimable(d["num_requests_with_failure"], d["num_requests"], min_failures)
        for k in keys:
            out[k].append(d[k] if ok else np.nan)
        out["samples"].append(d["samples"] if ok else np.full(num_draws, np.nan))
        out["estimable"].append(ok)
    deltas = {"delta_steer/harmful_compliance": {k: np.asarray(v) for k, v in out.items()}}
    return {"deltas": deltas, "truth": np.asarray(truth)}


def break_study(
    seeds: Sequence[int],
    scenario: Scenario,
    *,
    margin: float = 0.1,
    sim: SteerSim = SteerSim(),
    kappa: float = 0.15,
    num_draws: int = 400,
) -> dict[str, Any]:
    """How often the break rule returns the planted answer, and how often it breaks too early.

    ``false_break`` is the share of seeds whose break falls on a point where the planted Δ is
    still at or above the margin at that point or later (value that is still there declared
    vanished); ``correct`` the share returning exactly the planted answer.
    """
    labels = [f"p{i}" for i in range(len(scenario.effects))]
    correct, false_break, interval_ok, found, truths = [], [], [], [], []
    for seed in seeds:
        axis = simulate_axis(seed, scenario, sim=sim, kappa=kappa, num_draws=num_draws)
        brk = bp.find_break_point(labels, axis["deltas"], {"delta_steer": margin})
        truths.append(axis["truth"])
        answer = brk.index if brk.outcome == "break" else brk.outcome
        correct.append(answer == scenario.expected)
        found.append(brk.outcome == "break")
        value_left = np.flip(np.maximum.accumulate(np.flip(axis["truth"]))) >= margin
        false_break.append(brk.index is not None and bool(value_left[brk.index]))
        if isinstance(scenario.expected, int):
            lo, hi = brk.interval_index
            interval_ok.append(lo <= scenario.expected <= hi)
    return {
        "scenario": scenario.name,
        "expected": scenario.expected,
        "num_seeds": len(correct),
        "correct": float(np.mean(correct)),
        "break_found": float(np.mean(found)),
        "false_break": float(np.mean(false_break)),
        "interval_covers": float(np.mean(interval_ok)) if interval_ok else float("nan"),
        "true_delta": np.mean(truths, axis=0).round(4).tolist(),
        "margin": margin,
    }


# ---------------------------------------------------------------------------------------------
# A monitoring null: Δ_mon with plain NumPy logistic regression (not the probes module).


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, iters: int = 8):
    """Batched weighted L2 logistic regression by Newton's method.

    Args:
      x: [N, F] features (an intercept column is added; it is not penalised).
      y: [N] 0/1 labels.
      w: [B, N] non-negative prompt weights, one fit per row.
      l2: penalty on the slopes.
      iters: Newton steps.

    Returns:
      [B, F + 1] coefficients (intercept first).
    """
    x1 = np.hstack([np.ones((len(x), 1)), x])
    f1 = x1.shape[1]
    beta = np.zeros((w.shape[0], f1))
    pen = l2 * np.eye(f1)
    pen[0, 0] = 1e-8
    outer = (x1[:, :, None] * x1[:, None, :]).reshape(len(x), f1 * f1)  # [N, (F + 1)^2]
    for _ in range(iters):
        p = _sigmoid(beta @ x1.T)  # [B, N]
        grad = (w * (p - y)) @ x1 + beta @ pen
        hess = ((w * p * (1 - p)) @ outer).reshape(-1, f1, f1) + pen  # one GEMM for all fits
        beta = beta - np.linalg.solve(hess, grad[..., None])[..., 0]
    return beta


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted AUROC P(s_pos > s_neg) of [B, N] scores (continuous: no ties)."""
    order = np.argsort(scores, axis=1)
    y = np.asarray(labels, np.float64)[order]
    w = np.take_along_axis(weights, order, axis=1)
    w_neg = w * (1 - y)
    below = np.cumsum(w_neg, axis=1) - w_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * y * below).sum(1) / ((w * y).sum(1) * w_neg.sum(1))


def delta_mon_numpy(
    x_controls: np.ndarray,
    x_emotion: np.ndarray,
    failure: np.ndarray,
    request: np.ndarray,
    *,
    num_requests: int,
    weights: np.ndarray,
    num_folds: int = 5,
    l2: float = 1.0,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Out-of-fold AUROC(controls + emotion) − AUROC(controls), cluster bootstrap with refits.

    Folds are grouped by request; in every draw both probes are refitted on the draw's
    training weights and scored on its held-out prompts; the interval is centred.

    Args:
      x_controls: [N, Fc] control features.
      x_emotion: [N, Fe] emotion features.
      failure: [N] 0/1 failures of one type.
      request: [N] request ids.
      num_requests: U.
      weights: [R, U] request draws.
      num_folds: K.
      l2: penalty.
      seed: fold seed.
      level: coverage.

    Returns:
      ``estimate``, ``lo``, ``hi``, ``samples`` [R].
    """
    w_req = np.vstack([np.ones((1, num_requests)), np.asarray(weights, np.float64)])
    w = w_req[:, request]  # [1 + R, N]
    fold = stats.grouped_folds(num_requests, num_folds, seed)[request]
    y = np.asarray(failure, np.float64)
    auc = []
    for x in (x_controls, np.hstack([x_controls, x_emotion])):
        x = (x - x.mean(0)) / x.std(0)
        train = w[:, None, :] * (fold[None, None, :] != np.arange(num_folds)[None, :, None])
        beta = fit_logistic(x, y, train.reshape(-1, len(y)), l2)
        beta = beta.reshape(len(w), num_folds, -1)[:, fold]  # [1 + R, N, F + 1] own fold
        oof = beta[..., 0] + (beta[..., 1:] * x[None]).sum(-1)
        auc.append(weighted_auroc(oof, y, w))
    delta = auc[1] - auc[0]
    lo, hi = stats.centred_interval(delta[0], delta[1:], level)
    return {"estimate": float(delta[0]), "lo": float(lo), "hi": float(hi), "samples": delta[1:]}


def simulate_monitoring(
    rng: np.random.Generator, *, num_requests: int = 180, cues: int = 4, coupling: float = 0.0
) -> dict[str, np.ndarray]:
    """Clustered probe data in which failures depend on the controls (and, planted, an emotion).

    Per request: 4 control features (harm salience, caution, refusal, policy logit), a latent
    emotion m_u and a failure propensity r_u; each cue adds noise to the features. Emotion
    features are mixtures of the controls plus m_u, so they predict failures marginally, but
    under the null (``coupling`` 0) failures depend on the controls and r_u only: emotion
    features add nothing given the controls.
    """
    u, c = num_requests, cues
    request = np.repeat(np.arange(u), c)
    ctrl_u = rng.normal(size=(u, 4))
    m_u = rng.normal(size=u)
    r_u = rng.normal(0, 1.0, u)
    x_c = ctrl_u[request] + rng.normal(0, 0.5, (u * c, 4))
    mix = rng.normal(0, 0.5, (4, 3))
    x_e = x_c @ mix + m_u[request, None] + rng.normal(0, 0.5, (u * c, 3))
    logit = -1.0 + x_c @ np.array([1.2, -0.5, 0.8, 0.6]) + r_u[request] + coupling * m_u[request]
    y = (rng.uniform(size=u * c) < _sigmoid(logit)).astype(np.float64)
    return {"x_controls": x_c, "x_emotion": x_e, "failure": y, "request": request}


def monitor_study(
    seeds: Sequence[int],
    *,
    coupling: float = 0.0,
    num_requests: int = 180,
    cues: int = 4,
    num_draws: int = 200,
) -> dict[str, Any]:
    """Coverage of 0 and false-positive rate of the Δ_mon interval (numpy probes) over seeds."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng((seed, 19))
        data = simulate_monitoring(rng, num_requests=num_requests, cues=cues, coupling=coupling)
        out = delta_mon_numpy(
            data["x_controls"], data["x_emotion"], data["failure"], data["request"],
            num_requests=num_requests, weights=stats.request_draws(num_requests, num_draws, seed),
            seed=seed,
        )  # fmt: skip
        rows.append((out["estimate"], out["lo"], out["hi"]))
    est, lo, hi = np.array(rows).T
    return {
        "num_seeds": len(rows),
        "coupling": coupling,
        "coverage_zero": float(np.mean((lo <= 0) & (0 <= hi))),
        "significant": float(np.mean(lo > 0)),
        "negative": float(np.mean(hi < 0)),
        "positive_fraction": float(np.mean(est > 0)),
        "mean_estimate": float(np.mean(est)),
        "mean_half_width": float(np.mean(hi - est)),
    }


# ---------------------------------------------------------------------------------------------
# Real sweeps: random-direction arms as an exchangeable null.


def random_arm_calibration(
    fail_random: np.ndarray,
    kl_random: np.ndarray,
    request: np.ndarray,
    kappa: float,
    *,
    num_requests: int,
    arm_size: int = 3,
    num_pairs: int = 20,
    num_draws: int = 400,
    seed: int = 0,
    zero: int = 0,
    **delta_kwargs: Any,
) -> dict[str, Any]:
    """Δ_steer between two arms of real random-direction grids: what the interval conditions on.

    Two disjoint sets of ``arm_size`` norm-matched random directions are exchangeable *over
    directions*, so across pairs Δ_steer is centred on 0. For one drawn pair it is not 0:
    particular directions steer more or less well. The request bootstrap is conditional on
    the vectors (it resamples requests, not directions), so its interval covers 0 for such a
    pair only when the two arms happen to steer alike. The share of pairs that look
    "significant" by the interval alone measures how much directions differ beyond request
    noise, and is the reason every Δ is reported with its random-direction null (p-value):
    value beyond an arbitrary direction is read there, not from the interval. Pairs share
    requests, so the rates are correlated.

    Args:
      fail_random: [Q, G, N] real 0/1 failures of each random direction's grid (one type).
      kl_random: [Q, G, Mn] neutral KL per grid cell.
      request: [N] request ids.
      kappa: KL budget.
      num_requests: U.
      arm_size: grids per arm (the number of emotions).
      num_pairs: arm pairs drawn.
      num_draws: bootstrap draws per pair.
      seed: seed.
      zero: the unsteered cell within each grid.
      **delta_kwargs: passed to `incremental.delta_steer` (num_folds, num_splits, ...).

    Returns:
      ``coverage_zero``, ``significant`` (lo > 0), ``negative`` (hi < 0), ``mean`` (of the
      estimates over pairs; ~0 by exchangeability), ``estimate`` [pairs].
    """
    fail_random = np.asarray(fail_random, np.float64)
    kl_random = np.asarray(kl_random, np.float64)
    q = fail_random.shape[0]
    if q < 2 * arm_size:
        raise ValueError(f"need >= {2 * arm_size} random grids for two arms, got {q}")
    rng = np.random.default_rng((seed, 17))
    weights = stats.request_draws(num_requests, num_draws, seed)
    rows = []
    for i in range(num_pairs):
        pick = rng.choice(q, 2 * arm_size, replace=False)
        arm_a, arm_b = pick[:arm_size], pick[arm_size:]
        flat = lambda x, arm: x[arm].reshape(-1, x.shape[-1])
        out = incremental.delta_steer(
            flat(fail_random, arm_a), flat(fail_random, arm_b), flat(kl_random, arm_a),
            flat(kl_random, arm_b), request, kappa, num_requests=num_requests,
            weights=weights, seed=seed + i, zero_controls=zero, zero_emotion=zero,
            **delta_kwargs,
        )  # fmt: skip
        rows.append((out["estimate"], out["lo"], out["hi"]))
    est, lo, hi = np.array(rows).T
    return {
        "num_pairs": num_pairs,
        "coverage_zero": float(np.mean((lo <= 0) & (0 <= hi))),
        "significant": float(np.mean(lo > 0)),
        "negative": float(np.mean(hi < 0)),
        "mean": float(np.mean(est)),
        "estimate": est,
    }


def sweep_calibration(
    sweep_dir: str, kappa: float, *, num_pairs: int = 50, num_draws: int = 200, seed: int = 0
) -> dict[str, Any]:
    """`random_arm_calibration` on a finished sweep's random-direction grids, per failure type.

    Args:
      sweep_dir: a sweep work directory (`points/<label>/sweep` of a break-point run).
      kappa: KL budget.
      num_pairs: arm pairs (the "seeds" of the study).
      num_draws: request draws per pair.
      seed: seed.

    Returns:
      {failure type: random_arm_calibration's result (estimates as a list)}.
    """
    from emojax import sweep

    res = sweep.SweepResults.load(sweep_dir)
    out = {}
    for ftype in sweep.FAILURE_TYPES:
        arms = sweep.joint_arms(res, 0, ftype)
        r = random_arm_calibration(
            arms.fail["random"], arms.kl["random"], arms.request, kappa,
            num_requests=arms.num_requests, num_pairs=num_pairs, num_draws=num_draws,
            seed=seed, zero=arms.zero["random"],
        )  # fmt: skip
        r["estimate"] = np.asarray(r["estimate"]).tolist()
        out[ftype] = r
    return out


# ---------------------------------------------------------------------------------------------
# The whole study.


def run_calibration(
    num_seeds: int = 50, *, quick: bool = False, margin: float = 0.1
) -> dict[str, Any]:
    """Δ_steer under the null and under a planted effect, and every break scenario.

    ``quick`` shrinks requests and draws (for CI); the estimators are unchanged.
    """
    sim = SteerSim(num_requests=120) if quick else SteerSim()
    draws = 200 if quick else 400
    seeds = range(num_seeds)
    steer = {
        "null": steer_study(seeds, effect=0.0, sim=sim, num_draws=draws),
        "planted": steer_study(seeds, effect=1.0, sim=sim, num_draws=draws),
    }
    breaks = {
        s.name: break_study(seeds, s, margin=margin, sim=sim, num_draws=draws) for s in SCENARIOS
    }
    mon_kw = dict(num_requests=100 if quick else 180, num_draws=100 if quick else 200)
    monitor = {
        "null": monitor_study(seeds, coupling=0.0, **mon_kw),
        "planted": monitor_study(seeds, coupling=1.0, **mon_kw),
    }
    strip = lambda d: {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
    return {
        "num_seeds": num_seeds,
        "quick": quick,
        "sim": dataclasses.asdict(sim),
        "num_draws": draws,
        "steer": {k: strip(v) for k, v in steer.items()},
        "monitor": {**monitor, "cues": 4, **mon_kw},
        "break": breaks,
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The calibration tables (Δ_steer intervals; break rule) as Markdown."""
    s = result["steer"]
    lines = [
        f"Δ_steer, 95 % interval, {result['num_seeds']} seeds, "
        f"{result['sim']['num_requests']} requests x {result['sim']['cues']} cues, "
        f"{result['num_draws']} cluster draws:",
        "",
        "| truth | mean Δ_steer | estimate > 0 | covers truth | covers 0 | lo > 0 | hi < 0 "
        "| mean half-width |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s.items():
        lines.append(
            f"| {name} (mean Δ {r['mean_truth']:+.3f}) | {r['mean_estimate']:+.3f} "
            f"| {r['positive_fraction']:.2f} | {r['coverage_truth']:.2f} "
            f"| {r['coverage_zero']:.2f} | {r['significant']:.2f} | {r['negative']:.2f} "
            f"| {r['mean_half_width']:.3f} |"
        )
    m = result["monitor"]
    lines += [
        "",
        f"Δ_mon (NumPy L2 logistic probes, 5 folds grouped by request, refitted in each of "
        f"{m['num_draws']} cluster draws), {m['num_requests']} requests x {m['cues']} cues:",
        "",
        "| truth | mean Δ_mon | estimate > 0 | covers 0 | lo > 0 | hi < 0 | mean half-width |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("null", "planted"):
        r = m[name]
        truth = "null (Δ 0)" if name == "null" else f"planted (coupling {r['coupling']:g})"
        lines.append(
            f"| {truth} | {r['mean_estimate']:+.4f} | {r['positive_fraction']:.2f} "
            f"| {r['coverage_zero']:.2f} | {r['significant']:.2f} | {r['negative']:.2f} "
            f"| {r['mean_half_width']:.4f} |"
        )
    margin = next(iter(result["break"].values()))["margin"]
    lines += [
        "",
        f"Break rule (margin {margin:g} on Δ_steer), 4-point simulated axes:",
        "",
        "| scenario | planted answer | true Δ per point | correct | break found | false break "
        "| interval covers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["break"].values():
        cover = "–" if np.isnan(r["interval_covers"]) else f"{r['interval_covers']:.2f}"
        truth = ", ".join(f"{x:+.2f}" for x in r["true_delta"])
        lines.append(
            f"| {r['scenario']} | {r['expected']} | {truth} | {r['correct']:.2f} "
            f"| {r['break_found']:.2f} | {r['false_break']:.2f} | {cover} |"
        )
    return "\n".join(lines) + "\n"
