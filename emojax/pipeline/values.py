"""The incremental values of one axis point: Δ_mon and Δ_steer per failure type, on the
absolute and the relative scale, each with its random-direction null, its estimability in
every request draw, and the failure rates they are read against.

Dimension legend: N prompts, U requests, Q random directions, R bootstrap draws, D model.
"""

from __future__ import annotations

import os

import numpy as np

from emojax import breakpoint as bp
from emojax import probes, results, sweep, vectors
from emojax.metrics import incremental, scales
from emojax.pipeline.evalset import FAILURE_TYPES, TYPE_KINDS, Draws, EvalSet
from emojax.pipeline.examples import chosen_cell
from emojax.pipeline.progress import stage
from emojax.pipeline.stratify import SteeredSample


def headline_site(spec: float | int, num_sites: int) -> int:
    """An int residual-site index, or a depth fraction of the sites 0..L."""
    if isinstance(spec, float) and 0.0 <= spec < 1.0:
        return int(round(spec * (num_sites - 1)))
    return int(spec) % num_sites


def _request_flags(failing: np.ndarray, request: np.ndarray, num_requests: int):
    """[U] bool (requests with a failing prompt, requests with a non-failing prompt).

    A request whose cue variants both fail and do not fail counts on both sides: what a
    monitor can learn from is variation across requests' prompts.
    """
    failing = np.asarray(failing, bool)
    bad = np.zeros(num_requests, bool)
    bad[request[failing]] = True
    ok = np.zeros(num_requests, bool)
    ok[request[~failing]] = True
    return bad, ok


def _counts_in_draws(flags: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[R] distinct flagged requests present in each draw (multiplicity > 0)."""
    return ((np.asarray(weights) > 0) & flags).sum(-1)


def _not_estimable(num_failing: int, num_ok: int, num_draws: int) -> dict:
    nan = float("nan")
    empty = {"estimate": nan, "lo": nan, "hi": nan, "samples": np.full(num_draws, nan)}
    return {"estimable": False, "absolute": empty, "relative": dict(empty),
            "estimable_draws": np.zeros(num_draws, bool), "null_q05": nan, "null_q95": nan,
            "null_p": nan, "null": [], "num_failing_requests": num_failing,
            "num_ok_requests": num_ok}  # fmt: skip


def _null_fields(observed: float, null: np.ndarray) -> dict:
    null = np.asarray(null, np.float64)
    null = null[np.isfinite(null)]
    if not null.size:
        return {"null_q05": float("nan"), "null_q95": float("nan"), "null_p": float("nan")}
    q05, q95 = np.quantile(null, [0.05, 0.95])
    p = (1.0 + np.sum(null >= observed)) / (1.0 + null.size)
    return {"null_q05": float(q05), "null_q95": float(q95), "null_p": float(p),
            "null_arms": int(null.size)}  # fmt: skip


def _estimated(
    value: dict, relative: dict, null, estimable_draws: np.ndarray, num_failing: int,
    num_ok: int, extra: dict,
) -> dict:  # fmt: skip
    """One estimable Δ: both scales, draws, counts, its null (absolute scale) and extras."""
    est = float(value["estimate"])
    absolute = {"estimate": est, "lo": float(value["lo"]), "hi": float(value["hi"]),
                "samples": np.asarray(value["samples"], np.float64)}  # fmt: skip
    return {
        "estimable": True,
        "absolute": absolute,
        "relative": relative,
        "estimable_draws": np.asarray(estimable_draws, bool),
        "num_failing_requests": num_failing,
        "num_ok_requests": num_ok,
        "null": np.asarray(null, np.float64).tolist(),
        **_null_fields(est, null),
        **extra,
    }


def random_directions(num: int, width: int, seed: int) -> np.ndarray:
    """[Q, D] seeded random unit directions (the null of every projection-based statistic)."""
    r = np.random.default_rng([seed, 7]).standard_normal((num, width))
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def failure_rates(behaviour: dict, evalset: EvalSet, draws: Draws) -> dict:
    """Per failure type: the unsteered failure rate over prompts, its draws and interval.

    The interval (`emojax.metrics.incremental.failure_rate_interval`) is the centred bootstrap
    interval widened to the Wilson score interval at the effective number of prompts where
    that is wider: near 0 the bootstrap's upper bound alone falls below the truth too often,
    and the floor test (`failures eliminated`) reads that bound.

    Returns:
      type -> {"estimate", "lo", "hi", "samples" [R]} (rates over the type's prompts, each
      request weighted by its multiplicity in the draw).
    """
    kinds = np.array([q.kind for q in evalset.items])
    out = {}
    for t in FAILURE_TYPES:
        sel = np.isin(kinds, TYPE_KINDS[t])
        req = evalset.request[sel]
        fails = np.bincount(req, np.asarray(behaviour[t])[sel], evalset.num_requests)
        n = np.bincount(req, minlength=evalset.num_requests).astype(np.float64)
        rate = incremental.failure_rate_interval(fails, n, draws.weights)
        out[t] = {k: rate[k] for k in ("estimate", "lo", "hi", "samples")}
    return out


def _unit(vs: vectors.VectorSet, name: str, site: int) -> np.ndarray:
    v = vs.vectors[vs.index(name), min(site, vs.vectors.shape[1] - 1)]
    return v / np.linalg.norm(v)


@stage("probes")
def monitoring_value(
    behaviour: dict, vs: vectors.VectorSet, evalset: EvalSet, draws: Draws | None, cfg,
    out: str | None,
) -> dict:  # fmt: skip
    """Δ_mon per failure type at the headline site, with its random-direction null.

    Harmful compliance is monitored on harmful prompts (label: complied), over-refusal on
    harmless and borderline prompts (label: refused); never pooled. Controls: projections on
    harm-salience, caution and refusal directions plus the policy logit; the full model adds
    the emotion projections; the null replaces them by projections on random directions.
    With `draws` None only the full-data estimates are computed (no interval, no null): the
    measured truth of a validation arm.
    """
    p, d, b = cfg.probes, cfg.data, cfg.breakpoint
    acts = behaviour["acts"]
    site = headline_site(p.layer, acts.shape[1])
    x = acts[:, site].astype(np.float64)
    ctrl = np.concatenate([x @ np.stack([_unit(vs, k, site) for k in d.controls]).T,
                           behaviour["policy_logit"][:, None]], axis=1)  # fmt: skip
    emo = x @ np.stack([_unit(vs, k, site) for k in d.emotions]).T
    rand = x @ random_directions(p.num_random, x.shape[1], cfg.seed).T  # [N, Q]
    kinds = np.array([q.kind for q in evalset.items])
    weights = np.zeros((0, evalset.num_requests)) if draws is None else draws.weights
    out_types, num_draws = {}, len(weights)
    for ftype in FAILURE_TYPES:
        sel = np.isin(kinds, TYPE_KINDS[ftype])
        labels = behaviour[ftype][sel].astype(np.float32)
        req = evalset.request[sel]
        bad, ok = _request_flags(labels, req, evalset.num_requests)
        n_bad, n_ok = int(bad.sum()), int(ok.sum())
        if not bp.estimable(n_bad, n_bad + n_ok, b.min_failures):  # mixed requests: both sides
            out_types[ftype] = _not_estimable(n_bad, n_ok, num_draws)
            continue
        common = dict(num_requests=evalset.num_requests, l2_grid=tuple(p.l2_grid),
                      num_folds=p.num_folds, num_steps=p.num_steps, seed=p.seed)  # fmt: skip
        mon = probes.delta_mon(ctrl[sel], emo[sel], labels, req, weights=weights,
                               fpr=p.fpr, **common)  # fmt: skip
        rel = scales.on_scale(mon["estimate"], mon["samples"], 1.0 - mon["auroc_controls"],
                              1.0 - mon["auroc_controls_samples"],
                              min_denominator=float(b.get("mon_min_headroom", 0.0)))  # fmt: skip
        null = []
        if draws is not None:
            null = probes.delta_mon_null(
                ctrl[sel], np.moveaxis(rand[sel], 1, 0)[:, :, None], labels, req,
                num_null=p.num_null, arm_size=len(d.emotions), observed=float(mon["estimate"]),
                **common,
            )["null"]  # fmt: skip
        ok_draws = (_counts_in_draws(bad, weights) >= b.min_failures) & (
            _counts_in_draws(ok, weights) >= b.min_failures
        )
        extra = {"auroc_controls": float(mon["auroc_controls"]),
                 "auroc_full": float(mon["auroc_full"])}  # fmt: skip
        out_types[ftype] = _estimated(mon, rel, null, ok_draws, n_bad, n_ok, extra)
    if out is not None:
        results.save_arrays(os.path.join(out, "probes.npz"), {
            "request": evalset.request, "policy_logit": behaviour["policy_logit"],
            **{f"label_{t}": behaviour[t] for t in FAILURE_TYPES},
            **{f"delta_mon_samples_{t}": v["absolute"]["samples"] for t, v in out_types.items()},
        })  # fmt: skip
        results.write_json(os.path.join(out, "probes.json"), {"site": site, **summarise(out_types)})
    return {"site": site, "types": out_types}


def steering_value(
    res: sweep.SweepResults, sample: SteeredSample, draws: Draws | None, cfg,
    layer_pos: int = 0,
) -> dict:  # fmt: skip
    """Δ_steer per failure type at the KL budget κ, with its random-direction null.

    Rates are reweighted to the point's population (`sample`'s stratum weights, recomputed
    in every draw). Estimable when at least `breakpoint.min_failures` steered requests of
    the type fail unsteered (a failure-rate reduction needs failures to reduce; non-failing
    requests add precision but are not required). With `draws` None only the full-data
    estimates are computed.
    """
    b = cfg.breakpoint
    arr = res.arrays
    harmful = np.asarray(arr["harmful"], bool)
    request = np.asarray(arr["request"])
    u = int(res.meta["num_requests"])
    draw_w = np.zeros((0, u)) if draws is None else sample.draw_weights
    out, num_draws = {}, len(draw_w)
    for ftype in FAILURE_TYPES:
        cols = harmful if ftype == "harmful_compliance" else ~harmful
        failing = np.asarray(arr[f"base_{ftype}"])[cols] > 0.5
        bad, ok = _request_flags(failing, request[cols], u)
        n_bad, n_ok = int(bad.sum()), int(ok.sum())
        if n_bad < b.min_failures:
            out[ftype] = _not_estimable(n_bad, n_ok, num_draws)
            continue
        d = sweep.delta_steer_from_sweep(
            res, layer_pos, ftype, b.kappa, weights=draw_w,
            neutral_weights=None if draws is None else draws.neutral_weights,
            tolerance=b.get("steer_tolerance"), num_null=b.num_null if draws is not None else 0,
            seed=cfg.seed, request_weights=sample.request_weights,
        )  # fmt: skip
        # The relative value with the interval widened where feasibility is undecided.
        rel = incremental.relative_interval(d, min_denominator=float(b.get("steer_min_rate", 0.0)))
        null = d.get("null", {}).get("null", [])
        ok_draws = _counts_in_draws(bad, draw_w) >= b.min_failures
        extra = {k: float(d[k]) for k in ("controls_rate", "emotion_rate", "unsteered_rate")}
        extra["partners"] = d["partners"]
        extra["chosen_emotion_cell"] = chosen_cell(d["chosen_emotion"])
        out[ftype] = _estimated(d, rel, null, ok_draws, n_bad, n_ok, extra)
    return out


def summarise(per_type: dict) -> dict:
    """A JSON-ready copy of per-type values (draws dropped, scales kept)."""

    def strip(v: dict) -> dict:
        keep = {k: x for k, x in v.items() if k not in ("estimable_draws",)}
        for scale in ("absolute", "relative"):
            keep[scale] = {k: x for k, x in v[scale].items() if k != "samples"}
        return keep

    return {t: strip(v) for t, v in per_type.items()}
