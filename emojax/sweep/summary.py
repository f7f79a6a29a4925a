"""Metrics over a sweep's readouts: steerability with its random-direction null, modularity
(cross-steering, selectivity), style vs safety, and Δ_steer from the joint grids.

Dimension legend: A sweep layers, I steering vectors (named, then random), K coefficients,
K' joint coefficients, P joint pairs, N evaluation prompts, M neutral prompts, J concept
readouts, R bootstrap draws, U requests.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from emojax import stats
from emojax.metrics import incremental, influence, modularity
from emojax.sweep.assemble import SweepResults
from emojax.sweep.conditions import ARMS

FAILURE_TYPES = ("harmful_compliance", "over_refusal")


def summarize(results: SweepResults) -> dict[str, Any]:
    """Steerability (with random null), modularity and Δ_steer for every sweep layer.

    Returns, per layer (key = layer index as a string):
      steerability[vector][readout]: slope, slope_std, slope_iqr, anti_steerable_fraction,
        ci [lo, hi], null_z, null_p, for readouts refusal_score (all prompts),
        harmful_compliance (harmful prompts), over_refusal (benign prompts) and failure
        (either, all prompts);
      null[readout]: mean and std of the random directions' slopes;
      cross_steering: matrix [I_named, J], selectivity [I_named],
        offtarget_kl_per_unit_effect [I_named], cosine [I_named, I_named] between the
        steering directions at the layer (emotions vs controls), rows/cols names;
      style_vs_safety[vector]; delta_steer[failure type][kappa]: estimate, lo, hi,
        controls_rate, emotion_rate, null_p (emotion arm vs controls arm, cross-fitted,
        request bootstrap; `delta_steer_from_sweep`).
    """
    arr, meta = results.arrays, results.meta
    cfg = meta["config"]
    coefs = np.asarray(meta["coefs"], np.float64)
    names = meta["vector_names"]
    num_named = meta["num_named"]
    concepts = meta["concepts"]
    harmful = np.asarray(arr["harmful"], bool)
    seed, nboot = cfg["seed"], cfg["num_bootstrap"]
    out: dict[str, Any] = {}
    request = np.asarray(arr.get("request", np.arange(len(harmful))))
    num_requests = int(meta.get("num_requests", 0)) or int(request.max(initial=-1) + 1)
    draws = stats.request_draws(num_requests, nboot, seed)  # shared by every statistic here
    for a, layer in enumerate(meta["layers"]):
        # Failure types stay separate: never pooled into one label.
        readouts = {
            "refusal_score": (arr["grid_refusal_score"][a], request),
            "harmful_compliance": (arr["grid_harmful_compliance"][a][..., harmful],
                                   request[harmful]),
            "over_refusal": (arr["grid_over_refusal"][a][..., ~harmful], request[~harmful]),
        }  # fmt: skip
        steer: dict[str, Any] = {nm: {} for nm in names[:num_named]}
        null: dict[str, Any] = {}
        for rname, (y, req) in readouts.items():
            if y.shape[-1] == 0:
                continue
            rand = y[num_named:]
            rand = rand[~np.isnan(rand).any(axis=(1, 2))] if len(rand) else rand
            null_slopes = (
                influence.random_null_slopes(coefs, rand) if len(rand) >= 2 else np.zeros(0)
            )
            null[rname] = {
                "mean": float(null_slopes.mean()) if null_slopes.size else float("nan"),
                "std": float(null_slopes.std(ddof=1)) if null_slopes.size > 1 else float("nan"),
                "slopes": null_slopes.tolist(),
            }
            for i in range(num_named):
                if np.isnan(y[i]).any():
                    continue
                st = influence.steerability(coefs, y[i])
                est, lo, hi = influence.slope_interval(coefs, y[i], request=req, weights=draws)
                entry = {k: v for k, v in st.items() if k != "per_prompt"}
                entry["ci"] = [lo, hi]
                if null_slopes.size >= 2:
                    cmp = influence.null_comparison(np.asarray(st["slope"]), null_slopes)
                    entry["null_z"], entry["null_p"] = float(cmp["z"]), float(cmp["p"])
                steer[names[i]][rname] = entry
        proj = arr["grid_projection"][a]  # [I, K, N, J]
        matrix = modularity.cross_steering_matrix(coefs, proj[:num_named])
        own = [concepts.index(nm) for nm in names[:num_named]]
        target = np.stack([proj[i, ..., own[i]] for i in range(num_named)])
        selectivity = modularity.selectivity(matrix, own)
        cross = {
            "rows": names[:num_named],
            "cols": concepts,
            "matrix": matrix.tolist(),
            "selectivity": selectivity.tolist(),
            "offtarget_kl_per_unit_effect": modularity.offtarget_kl_per_unit_effect(
                coefs, arr["grid_kl"][a][:num_named], target
            ).tolist(),
            "cosine": arr["vector_cosine"][a].tolist() if "vector_cosine" in arr else None,
        }
        if len(names) - num_named >= 2:  # random directions scored against each target
            m_rand = modularity.cross_steering_matrix(coefs, proj[num_named:])
            sel_null = modularity.selectivity_null(m_rand, own, selectivity)
            cross["selectivity_null_p"] = np.asarray(sel_null["p"]).tolist()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN null row
                q = np.nanquantile(np.asarray(sel_null["null"], np.float64), [0.05, 0.95], axis=1)
            cross["selectivity_null_q05"], cross["selectivity_null_q95"] = q.tolist()
        style = {}
        for i in range(num_named):
            sty = np.stack([arr[f"grid_{k}"][a][i] for k in ("apology", "hedging", "warmth")])
            safety = {t: (y[i], req) for t, (y, req) in readouts.items() if t in FAILURE_TYPES}
            if np.isnan(sty).any() or any(np.isnan(v[0]).any() for v in safety.values()):
                continue
            style[names[i]] = _jsonable(
                influence.style_vs_safety(coefs, sty, safety, request, weights=draws)
            )
        delta = {}
        if "joint_harmful_compliance" in arr and "emotion" in meta.get("joint_arms", ["emotion"]):
            for ftype in FAILURE_TYPES:
                delta[ftype] = {}
                for kappa in cfg["kappas"]:
                    d = delta_steer_from_sweep(results, a, ftype, kappa, weights=draws,
                                               seed=seed)  # fmt: skip
                    delta[ftype][str(kappa)] = _delta_summary(d)
        out[str(layer)] = {
            "steerability": steer,
            "null": null,
            "cross_steering": cross,
            "style_vs_safety": style,
            "delta_steer": delta,
        }
    return out


@dataclasses.dataclass
class JointArms:
    """The Δ_steer grids of one sweep layer for one failure type, arm by arm.

    Dimension legend: G cells of an arm (its grids' coefficient pairs, flattened), Q random
    partners, N_t prompts of the failure type, N_o prompts of the other type, M neutral.

    Attributes:
      failure_type: 'harmful_compliance' (harmful prompts) or 'over_refusal' (the others).
      fail: arm -> [G, N_t] failure indicators ('controls', 'emotion'); 'random' [Q, G', N_t].
      other: the other failure type's indicators on its prompts, same layout.
      kl: arm -> [G, M] KL(unsteered ‖ steered) on neutral prompts; 'random' [Q, G', M].
      zero: arm -> the arm's unsteered cell (both coefficients 0, first grid).
      request: int [N_t] request index of the type's prompts; other_request [N_o].
      num_requests: U.
      partners: arm -> partner vector names, one per grid.
    """

    failure_type: str
    fail: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    kl: dict[str, np.ndarray]
    zero: dict[str, int]
    request: np.ndarray
    other_request: np.ndarray
    num_requests: int
    partners: dict[str, list[str]]


def joint_arms(results: SweepResults, layer_pos: int, failure_type: str) -> JointArms:
    """Splits a sweep's joint grids into the controls, emotion and random-direction arms."""
    arr, meta = results.arrays, results.meta
    if failure_type not in FAILURE_TYPES:
        raise ValueError(f"failure_type must be one of {FAILURE_TYPES}, not {failure_type!r}")
    if "joint_harmful_compliance" not in arr:
        raise ValueError("the sweep has no joint grids (sweep.joint_* config)")
    harmful = np.asarray(arr["harmful"], bool)
    request = np.asarray(arr.get("request", np.arange(len(harmful))), np.int64)
    cols = harmful if failure_type == "harmful_compliance" else ~harmful
    other_type = FAILURE_TYPES[1 - FAILURE_TYPES.index(failure_type)]
    arms = meta.get("joint_arms") or ["emotion"] * len(meta["joint_pairs"])
    jc = np.asarray(meta["joint_coefs"], np.float64)
    k0 = int(np.flatnonzero(np.isclose(jc, 0.0))[0])
    zero = k0 * len(jc) + k0  # the (0, 0) cell of the first grid of an arm
    fail, other, kl, partners = {}, {}, {}, {}
    for arm in ARMS:
        sel = [p for p, a in enumerate(arms) if a == arm]
        if not sel:
            continue
        f = arr[f"joint_{failure_type}"][layer_pos][sel][..., cols]  # [P, K, K, N_t]
        o = arr[f"joint_{other_type}"][layer_pos][sel][..., ~cols]
        k = arr["joint_kl"][layer_pos][sel]  # [P, K, K, M]
        p = len(sel)
        if arm == "random":
            fail[arm] = f.reshape(p, -1, f.shape[-1])
            other[arm] = o.reshape(p, -1, o.shape[-1])
            kl[arm] = k.reshape(p, -1, k.shape[-1])
        else:
            fail[arm] = f.reshape(-1, f.shape[-1])
            other[arm] = o.reshape(-1, o.shape[-1])
            kl[arm] = k.reshape(-1, k.shape[-1])
        partners[arm] = [meta["joint_pairs"][q][1] for q in sel]
    return JointArms(
        failure_type=failure_type,
        fail=fail,
        other=other,
        kl=kl,
        zero={arm: zero for arm in fail},
        request=request[cols],
        other_request=request[~cols],
        num_requests=int(meta.get("num_requests", request.max(initial=-1) + 1)),
        partners=partners,
    )


def delta_steer_from_sweep(
    results: SweepResults,
    layer_pos: int,
    failure_type: str,
    kappa: float,
    *,
    weights: np.ndarray | None = None,
    neutral_weights: np.ndarray | None = None,
    tolerance: float | None = None,
    num_folds: int = 5,
    num_splits: int = 4,
    num_null: int = 16,
    seed: int = 0,
    request_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Δ_steer of one failure type at one sweep layer, with its random-direction null.

    Calls `emojax.metrics.incremental.delta_steer` (controls arm vs emotion arm) and
    `delta_steer_null` (controls arm vs arms of random directions of the same shape) on the
    arms of `joint_arms`. `weights` [R, U] are the shared request draws (paired across arms,
    failure types and axis points); `tolerance` bounds how much the other failure type may
    rise at the chosen cell (None: the KL budget alone). `request_weights` [U] reweight a
    stratified sample to its population (`emojax.pipeline.stratify`; then `weights` are the
    draws' effective weights).
    """
    arms = joint_arms(results, layer_pos, failure_type)
    common = dict(
        num_requests=arms.num_requests,
        neutral_weights=neutral_weights,
        num_folds=num_folds,
        num_splits=num_splits,
        seed=seed,
        other_request=arms.other_request if tolerance is not None else None,
        tolerance=tolerance,
        request_weights=request_weights,
    )
    other = (lambda a: arms.other[a]) if tolerance is not None else (lambda a: None)
    out = incremental.delta_steer(
        arms.fail["controls"], arms.fail["emotion"], arms.kl["controls"], arms.kl["emotion"],
        arms.request, kappa, weights=weights, other_controls=other("controls"),
        other_emotion=other("emotion"), zero_controls=arms.zero["controls"],
        zero_emotion=arms.zero["emotion"], **common,
    )  # fmt: skip
    out["partners"] = arms.partners
    if "random" in arms.fail and num_null:
        null = incremental.delta_steer_null(
            arms.fail["controls"], arms.fail["random"], arms.kl["controls"], arms.kl["random"],
            arms.request, kappa, arm_size=len(arms.partners["emotion"]), num_null=num_null,
            other_controls=other("controls"), other_random=other("random"),
            zero_controls=arms.zero["controls"], zero_random=arms.zero["random"],
            observed=out["estimate"], **common,
        )  # fmt: skip
        out["null"] = null
    return out


def _delta_summary(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("estimate", "lo", "hi", "controls_rate", "emotion_rate", "half_width_hi")
    out = {k: float(d[k]) for k in keys if k in d}
    if "null" in d:
        out["null_p"] = float(d["null"]["p_value"])
    return out


def _jsonable(x: Any) -> Any:
    """numpy scalars and arrays inside a result dict -> plain Python (for summary.json)."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
