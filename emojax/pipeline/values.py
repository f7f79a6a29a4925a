"""The incremental values of one axis point: Δ_mon and Δ_steer per failure type, each with
its random-direction null, or "not estimable" where too few requests fail (or succeed).

Dimension legend: N prompts, U requests, Q random directions, R bootstrap draws, D model.
"""

from __future__ import annotations

import os

import numpy as np

from emojax import breakpoint as bp
from emojax import probes, results, sweep, vectors
from emojax.pipeline.evalset import FAILURE_TYPES, TYPE_KINDS, Draws, EvalSet
from emojax.pipeline.progress import stage


def headline_site(spec: float | int, num_sites: int) -> int:
    """An int residual-site index, or a depth fraction of the sites 0..L."""
    if isinstance(spec, float) and 0.0 <= spec < 1.0:
        return int(round(spec * (num_sites - 1)))
    return int(spec) % num_sites


def _estimable_counts(failing: np.ndarray, request: np.ndarray, num_requests: int):
    """(requests with a failing prompt, requests with a non-failing prompt).

    A request whose cue variants both fail and do not fail counts on both sides: what a
    monitor or a steering arm can learn from is variation across requests' prompts.
    """
    failing = np.asarray(failing, bool)
    bad = np.zeros(num_requests, bool)
    bad[request[failing]] = True
    ok = np.zeros(num_requests, bool)
    ok[request[~failing]] = True
    return int(bad.sum()), int(ok.sum())


def _not_estimable(num_failing: int, num_ok: int, num_draws: int) -> dict:
    nan = float("nan")
    return {"estimable": False, "estimate": nan, "lo": nan, "hi": nan, "min_margin": nan,
            "null_q05": nan, "null_q95": nan, "null_p": nan, "num_failing_requests": num_failing,
            "num_ok_requests": num_ok, "samples": np.full(num_draws, np.nan)}  # fmt: skip


def _null_fields(observed: float, null: np.ndarray) -> dict:
    null = np.asarray(null, np.float64)
    null = null[np.isfinite(null)]
    if not null.size:
        return {"null_q05": float("nan"), "null_q95": float("nan"), "null_p": float("nan")}
    q05, q95 = np.quantile(null, [0.05, 0.95])
    p = (1.0 + np.sum(null >= observed)) / (1.0 + null.size)
    return {"null_q05": float(q05), "null_q95": float(q95), "null_p": float(p)}


def _estimated(value: dict, null, num_failing: int, num_ok: int, extra: tuple[str, ...]) -> dict:
    """One estimable Δ: estimate, interval, power, draws, counts and its null."""
    null = np.asarray(null, np.float64)
    est = float(value["estimate"])
    return {
        "estimable": True,
        "estimate": est,
        "lo": float(value["lo"]),
        "hi": float(value["hi"]),
        "min_margin": float(value["hi"]) - est,
        **{k: float(value[k]) for k in extra},
        "num_failing_requests": num_failing,
        "num_ok_requests": num_ok,
        "samples": np.asarray(value["samples"], np.float64),
        "null": null.tolist(),
        **_null_fields(est, null),
    }


def random_directions(num: int, width: int, seed: int) -> np.ndarray:
    """[Q, D] seeded random unit directions (the null of every projection-based statistic)."""
    r = np.random.default_rng([seed, 7]).standard_normal((num, width))
    return r / np.linalg.norm(r, axis=1, keepdims=True)


@stage("probes")
def monitoring_value(
    behaviour: dict, vs: vectors.VectorSet, evalset: EvalSet, draws: Draws, cfg, out: str
) -> dict:
    """Δ_mon per failure type at the headline site, with its random-direction null.

    Harmful compliance is monitored on harmful prompts (label: complied), over-refusal on
    harmless and borderline prompts (label: refused); never pooled. Controls: projections on
    harm-salience, caution and refusal directions plus the policy logit; the full model adds
    the emotion projections; the null replaces them by projections on random directions.
    """
    p, d, b = cfg.probes, cfg.data, cfg.breakpoint
    acts = behaviour["acts"]
    site = headline_site(p.layer, acts.shape[1])
    vsite = min(site, vs.vectors.shape[1] - 1)
    unit = lambda k: vs.vectors[vs.index(k), vsite] / np.linalg.norm(vs.vectors[vs.index(k), vsite])
    x = acts[:, site].astype(np.float64)
    ctrl = np.concatenate([x @ np.stack([unit(k) for k in d.controls]).T,
                           behaviour["policy_logit"][:, None]], axis=1)  # fmt: skip
    emo = x @ np.stack([unit(k) for k in d.emotions]).T
    rand = x @ random_directions(p.num_random, x.shape[1], cfg.seed).T  # [N, Q]
    kinds = np.array([q.kind for q in evalset.items])
    out_types, num_draws = {}, len(draws.weights)
    for ftype in FAILURE_TYPES:
        sel = np.isin(kinds, TYPE_KINDS[ftype])
        labels = behaviour[ftype][sel].astype(np.float32)
        req = evalset.request[sel]
        n_bad, n_ok = _estimable_counts(labels, req, evalset.num_requests)
        if not bp.estimable(n_bad, n_bad + n_ok, b.min_failures):  # mixed requests: both sides
            out_types[ftype] = _not_estimable(n_bad, n_ok, num_draws)
            continue
        common = dict(num_requests=evalset.num_requests, l2_grid=tuple(p.l2_grid),
                      num_folds=p.num_folds, num_steps=p.num_steps, seed=p.seed)  # fmt: skip
        mon = probes.delta_mon(ctrl[sel], emo[sel], labels, req, weights=draws.weights,
                               fpr=p.fpr, **common)  # fmt: skip
        null = probes.delta_mon_null(
            ctrl[sel], np.moveaxis(rand[sel], 1, 0)[:, :, None], labels, req,
            num_null=p.num_null, arm_size=len(d.emotions), observed=float(mon["estimate"]),
            **common,
        )  # fmt: skip
        out_types[ftype] = _estimated(mon, null["null"], n_bad, n_ok,
                                      ("auroc_controls", "auroc_full"))  # fmt: skip
    results.save_arrays(os.path.join(out, "probes.npz"), {
        "request": evalset.request, "policy_logit": behaviour["policy_logit"],
        **{f"label_{t}": behaviour[t] for t in FAILURE_TYPES},
        **{f"delta_mon_samples_{t}": v["samples"] for t, v in out_types.items()},
    })  # fmt: skip
    info = {t: {k: v for k, v in o.items() if k != "samples"} for t, o in out_types.items()}
    results.write_json(os.path.join(out, "probes.json"), {"site": site, **info})
    return {"site": site, "types": out_types}


def steering_value(res: sweep.SweepResults, draws: Draws, cfg, layer_pos: int = 0) -> dict:
    """Δ_steer per failure type at the KL budget κ, with its random-direction null.

    Estimable when the unsteered model fails on enough requests of the sweep's prompts.
    """
    b = cfg.breakpoint
    arr = res.arrays
    harmful = np.asarray(arr["harmful"], bool)
    request = np.asarray(arr["request"])
    out, num_draws = {}, len(draws.weights)
    for ftype in FAILURE_TYPES:
        cols = harmful if ftype == "harmful_compliance" else ~harmful
        failing = np.asarray(arr[f"base_{ftype}"])[cols] > 0.5
        n_bad, n_ok = _estimable_counts(failing, request[cols], int(res.meta["num_requests"]))
        if not bp.estimable(n_bad, n_bad + n_ok, b.min_failures):  # mixed requests: both sides
            out[ftype] = _not_estimable(n_bad, n_ok, num_draws)
            continue
        d = sweep.delta_steer_from_sweep(
            res, layer_pos, ftype, b.kappa, weights=draws.weights,
            neutral_weights=draws.neutral_weights, tolerance=b.get("steer_tolerance"),
            num_null=b.num_null, seed=cfg.seed,
        )  # fmt: skip
        null = d.get("null", {}).get("null", [])
        out[ftype] = _estimated(d, null, n_bad, n_ok, ("controls_rate", "emotion_rate"))
    return out
