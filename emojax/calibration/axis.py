"""One simulated axis, measured as the shipped pipeline measures a real one.

Dimension legend: P axis points, U requests (both failure types: ids 0..U_t-1 harmful
compliance, U_t..2U_t-1 over-refusal), Ut requests of one type, N prompts, R request draws,
Mn neutral prompts.

At every point and for each failure type (as `emojax.pipeline.values` does):

* the unsteered pass over all the type's requests gives the failure rate (prompts, each
  request weighted by its multiplicity in a draw; centred interval) and Δ_mon's data;
* Δ_mon: `emojax.calibration.monitor.delta_mon_numpy` when at least `min_failures` requests
  have a failing prompt and as many a non-failing one; relative scale ΔAUROC / (1 − AUROC
  controls) draw by draw (`emojax.metrics.scales.on_scale`);
* Δ_steer: requests stratified by their unsteered outcome (`failing_requests` failing and
  `ok_requests` non-failing, all when fewer, the same request order at every point), every
  cue variant steered, weights stratum population / stratum sample (recomputed in every draw
  from its multiplicities, as `emojax.pipeline.stratify.stratum_weights`); the real
  `emojax.metrics.incremental.delta_steer` (cross-fitted, cluster bootstrap, neutral prompts
  resampled) when at least `min_failures` steered requests fail; relative scale Δ_steer /
  unsteered rate draw by draw;
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


def stratum_weights(multiplicity: np.ndarray, population: np.ndarray, sample: np.ndarray):
    """[..., U] weights of one stratum: m_u x Σ_pop m / Σ_sample m on the sample, else 0.

    The formula of `emojax.pipeline.stratify.stratum_weights` (a test holds them equal;
    calibration sits below the pipeline and may not import it).
    """
    m = np.asarray(multiplicity, np.float64)
    pop = (m * population).sum(-1, keepdims=True)
    smp = (m * sample).sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(smp > 0, pop / smp, 0.0)
    return np.where(sample, m * scale, 0.0)


def _flags(failure: np.ndarray, request: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """[Ut] requests with a failing prompt, requests with a non-failing prompt."""
    bad = np.bincount(request, failure, num) > 0
    ok = np.bincount(request, 1.0 - failure, num) > 0
    return bad, ok


def _present(flags: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[R] flagged requests present in each draw (multiplicity > 0)."""
    return ((weights > 0) & flags).sum(-1)


def _missing(num_draws: int) -> dict[str, Any]:
    nan = float("nan")
    empty = {"estimate": nan, "lo": nan, "hi": nan, "samples": np.full(num_draws, nan)}
    return {"estimable": False, "absolute": empty, "relative": dict(empty),
            "estimable_draws": np.zeros(num_draws, bool)}  # fmt: skip


def failure_rate(failure: np.ndarray, request: np.ndarray, weights: np.ndarray) -> dict:
    """The unsteered failure rate over prompts, its draws [R] and centred interval."""
    fails = np.bincount(request, failure, weights.shape[1])
    n = np.bincount(request, minlength=weights.shape[1]).astype(np.float64)
    est = float(fails.sum() / n.sum())
    samples = (weights @ fails) / (weights @ n)
    lo, hi = stats.centred_interval(est, samples)
    return {"estimate": est, "lo": float(lo), "hi": float(hi), "samples": samples}


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


def steering(
    rng: np.random.Generator,
    arms: grids.Arms,
    effect: np.ndarray,
    data: dict,
    req: world.Requests,
    order: np.ndarray,
    weights: np.ndarray,
    neutral_weights: np.ndarray,
    regime: Regime,
    seed: int,
) -> dict[str, Any]:
    """Δ_steer of one type at one point on the stratified sample, on both scales."""
    u = req.num_requests
    bad, _ = _flags(data["failure"], req.request, u)
    take = np.zeros(u, bool)
    for stratum, n in ((bad, regime.failing_requests), (~bad, regime.ok_requests)):
        ids = order[stratum[order]]
        take[ids[:n] if n > 0 else ids] = True  # 0: the whole stratum
    full = sum(stratum_weights(np.ones(u), s, take & s) for s in (bad, ~bad))
    draw = sum(stratum_weights(weights, s, take & s) for s in (bad, ~bad))
    failing_sampled = bad & take
    if failing_sampled.sum() < regime.min_failures:
        return _missing(len(weights))
    prompts = np.flatnonzero(take[req.request])
    sim = grids.steer(
        rng, arms, effect, regime.latents, data["mean"][prompts], data["failure"][prompts],
        req.request[prompts], regime.num_neutral,
    )  # fmt: skip
    zero_c, zero_e = arms.zero
    d = incremental.delta_steer(
        sim["fail_controls"], sim["fail_emotion"], sim["kl_controls"], sim["kl_emotion"],
        req.request[prompts], regime.kappa, num_requests=u, weights=draw,
        neutral_weights=neutral_weights, num_folds=regime.num_folds,
        num_splits=regime.num_splits, seed=seed, zero_controls=zero_c, zero_emotion=zero_e,
        request_weights=full,
    )  # fmt: skip
    rel = scales.on_scale(d["estimate"], d["samples"], d["unsteered_rate"],
                          d["unsteered_samples"])  # fmt: skip
    return {"estimable": True, "absolute": d, "relative": rel,
            "estimable_draws": _present(failing_sampled, draw) >= regime.min_failures}  # fmt: skip


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
    lat = regime.latents
    ut, p = regime.num_requests, scenario.num_points
    all_weights = stats.request_draws(2 * ut, regime.num_draws, seed)  # [R, U]: one for all
    mn = regime.num_neutral
    neutral = rng.multinomial(mn, np.full(mn, 1.0 / mn), size=regime.num_draws)
    labels = [f"p{i}" for i in range(p)]
    values: dict[str, list] = {}
    rates: dict[str, dict] = {}
    for t_index, (ftype, plan) in enumerate(scenario.plans):
        req = world.draw_requests(rng, ut, regime.cues, lat)
        weights = all_weights[:, t_index * ut : (t_index + 1) * ut]
        order = rng.permutation(ut)  # the order strata are sampled in, the same at every point
        per_rate = []
        for i in range(p):
            rate, coupling = plan.rates[i], plan.mon[i]
            mu = lat.base_logit(rate, coupling)
            data = world.unsteered(rng, req, lat, mu, coupling)
            per_rate.append(failure_rate(data["failure"], req.request, weights))
            effect = grids.plant(arms, ftype, lat, mu, coupling, plan.steer[i], regime.kappa)
            truth = {
                "delta_mon": world.true_mon(lat, rate, coupling, regime.truth_prompts),
                "delta_steer": grids.true_steer(arms, effect, lat, mu, coupling, regime.kappa),
            }
            measured = {
                "delta_mon": monitoring(data, req.request, weights, regime, seed),
                "delta_steer": steering(
                    rng, arms, effect, data, req, order, weights, neutral, regime, seed
                ),
            }
            for stat, m in measured.items():
                values.setdefault(f"{stat}/{ftype}", []).append({**m, "truth": truth[stat]})
        rates[ftype] = {k: np.array([r[k] for r in per_rate]) for k in per_rate[0]}
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
    return {"labels": labels, "deltas": deltas, "failure_rates": rates, "values": summary}
