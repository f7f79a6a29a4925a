"""One simulated axis, measured as the shipped pipeline measures a real one.

Dimension legend: P axis points, U requests (both failure types: ids 0..U_t-1 harmful
compliance, U_t..2U_t-1 over-refusal), Ut requests of one type, N prompts, R request draws,
Mn neutral prompts.

At every point and for each failure type (as `emojax.pipeline.values` does):

* the unsteered pass over all the type's requests gives the failure rate (prompts, each
  request weighted by its multiplicity in a draw; the centred bootstrap interval widened to
  the Wilson interval at the effective number of prompts) and Δ_mon's data;
* Δ_mon: `emojax.calibration.monitor.delta_mon_numpy` when at least `min_failures` requests
  have a failing prompt and as many a non-failing one; relative scale ΔAUROC / (1 − AUROC
  controls) draw by draw (`emojax.metrics.scales.on_scale`);
* Δ_steer: requests stratified by their unsteered outcome (`failing_requests` failing and
  `ok_requests` non-failing, all when fewer, the same request order at every point), every
  cue variant steered, weights stratum population / stratum sample (recomputed in every draw
  from its multiplicities, `emojax.stats.stratum_weights`, as the pipeline does); the real
  `emojax.metrics.incremental.delta_steer` (cross-fitted, cluster bootstrap, neutral prompts
  resampled, the other type's steered prompts bounding the choice by `tolerance`, the
  interval widened to the bounds of undecided feasibility) when at least `min_failures`
  steered requests fail; relative scale Δ_steer / unsteered rate draw by draw, bounds
  included (`emojax.metrics.incremental.relative_interval`);
* estimability in each draw: the same counts over the requests present in the draw.

One matrix of request draws serves every Δ, type and point (paired), as in a run.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from emojax import breakpoint as bp
from emojax import stats
from emojax.calibration import grids, world
from emojax.calibration.monitor import delta_mon_numpy
from emojax.calibration.scenarios import Regime, Scenario
from emojax.metrics import incremental, scales
from emojax.stats import stratum_weights


def _flags(failure: np.ndarray, request: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """[Ut] requests with a failing prompt, requests with a non-failing prompt."""
    bad = np.bincount(request, failure, num) > 0
    ok = np.bincount(request, 1.0 - failure, num) > 0
    return bad, ok


def _present(flags: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[R] flagged requests present in each draw (multiplicity > 0)."""
    return ((weights > 0) & flags).sum(-1)


def _global(x: np.ndarray, block: int) -> np.ndarray:
    """[..., Ut] of one failure type -> [..., U] (zeros on the other type's requests)."""
    ut = x.shape[-1]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(block * ut, (1 - block) * ut)])


def _missing(num_draws: int) -> dict[str, Any]:
    nan = float("nan")
    empty = {"estimate": nan, "lo": nan, "hi": nan, "samples": np.full(num_draws, nan)}
    return {"estimable": False, "absolute": empty, "relative": dict(empty),
            "estimable_draws": np.zeros(num_draws, bool)}  # fmt: skip


def failure_rate(failure: np.ndarray, request: np.ndarray, weights: np.ndarray) -> dict:
    """The unsteered failure rate over prompts, its draws [R] and interval: the pipeline's
    (`emojax.pipeline.values.failure_rates`), `incremental.failure_rate_interval`."""
    fails = np.bincount(request, failure, weights.shape[1])
    n = np.bincount(request, minlength=weights.shape[1]).astype(np.float64)
    rate = incremental.failure_rate_interval(fails, n, weights)
    return {k: rate[k] for k in ("estimate", "lo", "hi", "samples")}


def monitoring(data: dict, request: np.ndarray, weights: np.ndarray, regime: Regime, seed: int):
    """Δ_mon of one type at one point on both scales, with its estimability per draw."""
    u = weights.shape[1]
    bad, ok = _flags(data["failure"], request, u)
    m = regime.min_failures
    if not bp.estimable(bad.sum(), bad.sum() + ok.sum(), m):
        return _missing(len(weights))
    mon = delta_mon_numpy(data["x_controls"], data["x_emotion"], data["failure"], request,
                          num_requests=u, weights=weights, num_folds=regime.num_folds,
                          seed=seed)  # fmt: skip
    rel = scales.on_scale(mon["estimate"], mon["samples"], 1.0 - mon["auroc_controls"],
                          1.0 - mon["auroc_controls_samples"])  # fmt: skip
    ok_draws = (_present(bad, weights) >= m) & (_present(ok, weights) >= m)
    return {"estimable": True, "absolute": mon, "relative": rel, "estimable_draws": ok_draws}


def stratified_sample(
    failure: np.ndarray, request: np.ndarray, order: np.ndarray, weights: np.ndarray,
    regime: Regime,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The steered requests of one type: stratified by unsteered outcome, reweighted.

    Returns:
      ``take`` [Ut] bool, ``failing`` [Ut] (steered and failing unsteered), ``full`` [Ut]
      full-data weights (stratum population / stratum sample), ``draw`` [R, Ut] the same in
      every draw.
    """
    u = len(order)
    bad, _ = _flags(failure, request, u)
    take = np.zeros(u, bool)
    for stratum, n in ((bad, regime.failing_requests), (~bad, regime.ok_requests)):
        ids = order[stratum[order]]
        take[ids[:n] if n > 0 else ids] = True  # 0: the whole stratum
    full = sum(stratum_weights(np.ones(u), s, take & s) for s in (bad, ~bad))
    draw = sum(stratum_weights(weights, s, take & s) for s in (bad, ~bad))
    return {"take": take, "failing": bad & take, "full": full, "draw": draw}


def steering(
    ftype: str, steered: dict[str, dict], kl: dict, neutral_weights: np.ndarray,
    arms: grids.Arms, regime: Regime, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Δ_steer of one type at one point on both scales, the other type bounding the choice.

    Args:
      ftype: the failure type.
      steered: per type, its `stratified_sample` with the global ids (``request``, ``full``,
        ``draw``) and its arms' failures (``fail_controls``, ``fail_emotion``).
      kl: the arms' neutral KL (``kl_controls``, ``kl_emotion``).
      neutral_weights: [R, Mn] draws of the neutral prompts.
      arms: the arms.
      regime: the settings (``tolerance``: the other type's allowed rise).
      seed: seed of the folds.
    """
    mine, other = steered[ftype], steered[grids.TYPES[1 - grids.TYPES.index(ftype)]]
    draw = mine["draw"] + other["draw"]  # [R, U] the strata of both types
    if mine["failing"].sum() < regime.min_failures:
        return _missing(len(draw))
    zero_c, zero_e = arms.zero
    d = incremental.delta_steer(
        mine["fail_controls"], mine["fail_emotion"], kl["kl_controls"], kl["kl_emotion"],
        mine["request"], regime.kappa, num_requests=draw.shape[1], weights=draw,
        neutral_weights=neutral_weights, num_folds=regime.num_folds,
        num_splits=regime.num_splits, seed=seed, other_controls=other["fail_controls"],
        other_emotion=other["fail_emotion"], other_request=other["request"],
        zero_controls=zero_c, zero_emotion=zero_e, tolerance=regime.tolerance,
        request_weights=mine["full"] + other["full"],
    )  # fmt: skip
    rel = incremental.relative_interval(d)
    ok_draws = _present(mine["failing"], draw) >= regime.min_failures
    return {"estimable": True, "absolute": d, "relative": rel, "estimable_draws": ok_draws}


def scenario_arms(scenario: Scenario, regime: Regime) -> grids.Arms:
    """The scenario's arms: fixed across seeds (the vectors are not resampled)."""
    return grids.build_arms(np.random.default_rng([zlib.crc32(scenario.name.encode()), 3]),
                            regime.grid_side)  # fmt: skip


def simulate_axis(seed: int, scenario: Scenario, regime: Regime) -> dict[str, Any]:
    """Every Δ at every point of one simulated axis, with its truth and the rule's inputs.

    Returns:
      ``labels`` [P]; ``deltas``: per Δ name, the `find_break_point` input on the regime's
      scale; ``failure_rates``: per type; ``values``: per Δ name, per point, {'absolute',
      'relative': (estimate, lo, hi), 'truth': {'absolute', 'relative'}, 'estimable'}.
    """
    rng = np.random.default_rng([seed, zlib.crc32(scenario.name.encode())])
    arms = scenario_arms(scenario, regime)
    lat, plans = regime.latents, dict(scenario.plans)
    ut, p = regime.num_requests, scenario.num_points
    all_weights = stats.request_draws(2 * ut, regime.num_draws, seed)  # [R, U]: one for all
    mn = regime.num_neutral
    neutral = rng.multinomial(mn, np.full(mn, 1.0 / mn), size=regime.num_draws)
    types = grids.TYPES
    reqs = {t: world.draw_requests(rng, ut, regime.cues, lat) for t in types}
    blocks = {t: all_weights[:, k * ut : (k + 1) * ut] for k, t in enumerate(types)}
    orders = {t: rng.permutation(ut) for t in types}  # strata sampled in one order throughout
    values: dict[str, list] = {}
    per_rate: dict[str, list] = {t: [] for t in types}
    for i in range(p):
        points = {t: (lat.base_logit(plans[t].rates[i], plans[t].mon[i]), plans[t].mon[i])
                  for t in types}  # fmt: skip
        effects = grids.plant(arms, lat, points, {t: plans[t].steer[i] for t in types},
                              regime.kappa, regime.tolerance)  # fmt: skip
        steer_truth = grids.true_steer(arms, effects, lat, points, regime.kappa, regime.tolerance)
        kl = grids.neutral_kl(rng, arms, mn)
        data, steered = {}, {}
        for k, t in enumerate(types):
            req, (mu, coupling) = reqs[t], points[t]
            data[t] = world.unsteered(rng, req, lat, mu, coupling)
            per_rate[t].append(failure_rate(data[t]["failure"], req.request, blocks[t]))
            sample = stratified_sample(data[t]["failure"], req.request, orders[t], blocks[t],
                                       regime)  # fmt: skip
            prompts = np.flatnonzero(sample["take"][req.request])
            fails = grids.steer(rng, arms, effects[t], lat, data[t]["mean"][prompts],
                                data[t]["failure"][prompts], req.request[prompts])  # fmt: skip
            steered[t] = {**fails, "request": req.request[prompts] + k * ut}
            steered[t].update({x: _global(sample[x], k) for x in ("failing", "full", "draw")})
        for t in types:
            rate, coupling = plans[t].rates[i], plans[t].mon[i]
            truth = {"delta_mon": world.true_mon(lat, rate, coupling, regime.truth_prompts),
                     "delta_steer": steer_truth[t]}  # fmt: skip
            measured = {
                "delta_mon": monitoring(data[t], reqs[t].request, blocks[t], regime, seed),
                "delta_steer": steering(t, steered, kl, neutral, arms, regime, seed),
            }
            for stat, m in measured.items():
                values.setdefault(f"{stat}/{t}", []).append({**m, "truth": truth[stat]})
    rates = {t: {k: np.array([r[k] for r in per_rate[t]]) for k in per_rate[t][0]} for t in types}
    deltas = {}
    for name, per_point in values.items():
        on = [v[regime.scale] for v in per_point]
        deltas[name] = {
            **{k: np.array([v[k] for v in on], np.float64) for k in ("estimate", "lo", "hi")},
            "samples": np.stack([np.asarray(v["samples"], np.float64) for v in on]),
            "estimable": np.array([v["estimable"] for v in per_point]),
            "estimable_draws": np.stack([v["estimable_draws"] for v in per_point]),
        }
    keep = ("estimate", "lo", "hi")
    summary = {
        name: [{"estimable": bool(v["estimable"]), "truth": v["truth"],
                **{s: tuple(float(v[s][k]) for k in keep) for s in ("absolute", "relative")}}
               for v in per_point]
        for name, per_point in values.items()
    }  # fmt: skip
    labels = [f"p{i}" for i in range(p)]
    return {"labels": labels, "deltas": deltas, "failure_rates": rates, "values": summary}
