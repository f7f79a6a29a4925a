"""Every measurement at one axis point: vectors and their stability, the steering sweep, the
model's own behaviour and failures, Δ_mon and Δ_steer, and the row of `points.csv`.

Dimension legend: C concepts, L residual sites, N prompts, D model.
"""

from __future__ import annotations

import os
import warnings

import jax
import numpy as np

from emojax import breakpoint as bp
from emojax import extract, results, sweep, vectors
from emojax.metrics import stability
from emojax.pipeline.axis import AxisPoint
from emojax.pipeline.behaviour import classifier, unsteered_behaviour
from emojax.pipeline.evalset import FAILURE_TYPES, Draws, EvalSet
from emojax.pipeline.examples import example_generations
from emojax.pipeline.power import power_preflight, scale_of
from emojax.pipeline.progress import stage
from emojax.pipeline.stratify import steered_sample
from emojax.pipeline.values import (
    failure_rates,
    monitoring_value,
    steering_value,
    summarise,
)
from emojax.report import write_csv

Array = jax.Array


@stage("extract")
def run_extraction(point: AxisPoint, cfg, out: str, rng: Array, reference) -> dict:
    """Concept vectors of one point (saved under `out/vectors`) and their stability.

    Returns:
      {"extraction": `emojax.extract.Extraction`, "report": `stability_report`, "cross": the
      cross-model report against `reference` (the first point's capture), or None for it}.
    """
    m = point.model
    ex = extract.extract_model(
        m.params, m.config, m.tokenizer, **extract.config_kwargs(cfg),
        metadata={"model": point.label, "source": point.source, "model_sha256": point.digest},
    )  # fmt: skip
    vectors.save_all(ex.vector_sets, os.path.join(out, "vectors"))
    d = cfg.data
    k1, k2 = jax.random.split(rng)
    report = stability.stability_report(
        k1, ex.captured, d.emotions, d.controls, cfg.extract.resamples
    )
    rows, crows = stability.report_rows(report)
    write_csv(os.path.join(out, "stability.csv"), rows)
    write_csv(os.path.join(out, "control_cosine.csv"), crows)
    cross = None
    if reference is not None:
        cross = stability.cross_model_report(
            k2, reference["captured"], ex.captured, cfg.extract.resamples
        )
    return {"extraction": ex, "report": report, "cross": cross}


@stage("sweep")
def run_steering(point: AxisPoint, vs: vectors.VectorSet, prompts, cfg, out: str | None) -> dict:
    """The steering sweep of one point (`emojax.sweep.run_sweep` into `out`, or in memory when
    None): {"results"}."""
    res = sweep.run_sweep(point.model, vs, prompts, cfg.sweep, out, classify=classifier(cfg))
    return {"results": res}


def _mean_interval(iv, rows: list[int], site: int) -> tuple[float, float, float]:
    """Mean over `rows` (concepts) of an Interval [C, L] at one site (NaN where undefined)."""

    def pick(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: e.g. one domain only
            return float(np.nanmean(np.asarray(x)[rows, site]))

    return pick(iv.estimate), pick(iv.lo), pick(iv.hi)


def _value_columns(stat: str, per_type: dict, preflight: dict, cfg) -> dict:
    """points.csv columns of one Δ per failure type; None (empty) where not estimable.

    `{stat}_{type}` is the absolute estimate (with `_lo`, `_hi`), `_rel*` the relative one;
    `_min_margin` (realised: hi − estimate) and `_power` (preflight: the smallest margin the
    counts could confirm) are on the scale the break rule reads (`breakpoint.*_scale`).
    """
    row = {}
    rule_scale = scale_of(cfg, stat)
    for ftype, v in per_type.items():
        key = f"{stat}_{ftype}"
        ok = bool(v["estimable"])
        row[f"{key}_estimable"] = ok
        row[f"{key}_failing_requests"] = int(v["num_failing_requests"])  # on its own prompts
        row[f"{key}_ok_requests"] = int(v["num_ok_requests"])
        for scale, suffix in (("absolute", ""), ("relative", "_rel")):
            for f in ("estimate", "lo", "hi"):
                name = key + suffix + ("" if f == "estimate" else f"_{f}")
                x = v[scale][f]
                row[name] = float(x) if ok and np.isfinite(x) else None
        r = v[rule_scale]
        half = r["hi"] - r["estimate"]
        row[f"{key}_min_margin"] = float(half) if ok and np.isfinite(half) else None
        row[f"{key}_power"] = preflight.get(f"{stat}/{ftype}", {}).get("smallest_margin")
        for f in ("null_q05", "null_q95", "null_p"):
            row[f"{key}_{f}"] = float(v[f]) if ok and np.isfinite(v[f]) else None
    return row


def preflight_point(point: AxisPoint, cfg, evalset: EvalSet, draws: Draws, out: str) -> dict:
    """Extraction-free power preflight of one point: its unsteered behaviour, failure rates,
    the steered sample it would get, and the smallest confirmable margins
    (`breakpoint.preflight_only`). Nothing is steered."""
    s, d = cfg.sweep, cfg.data
    behaviour = unsteered_behaviour(point.model, evalset.prompts(point.model.tokenizer, cfg), cfg)
    rates = failure_rates(behaviour, evalset, draws)
    cues = tuple(d.get("sweep_cues") or ()) or None
    sample = steered_sample(
        evalset, {t: behaviour[t] for t in FAILURE_TYPES}, draws.weights,
        failing=int(s.failing_requests), ok=int(s.ok_requests), cues=cues, seed=cfg.seed,
    )  # fmt: skip
    pre = power_preflight(behaviour, evalset, sample, rates, cfg, point.label)
    out_json = {
        "label": point.label, "source": point.source,
        "failure_rates": {t: {k: v for k, v in r.items() if k != "samples"}
                          for t, r in rates.items()},
        "steered": sample.strata, "power_preflight": pre,
    }  # fmt: skip
    results.write_json(os.path.join(out, "preflight.json"), out_json)
    return out_json


def point_values(
    point: AxisPoint, vs: vectors.VectorSet, evalset: EvalSet, draws: Draws | None, cfg,
    out: str | None,
) -> dict:  # fmt: skip
    """The safety values of one VectorSet on one evaluation set at one point.

    The unsteered behaviour on every prompt of `evalset` gives the failures (and their
    rates), Δ_mon, and the steered sample: requests stratified by unsteered outcome
    (`stratify.steered_sample`); the power preflight runs before the sweep; the sweep on the
    sample gives Δ_steer. With `draws` None only full-data estimates are computed (no
    intervals, no nulls) and nothing is written: the measured truth of a validation arm on a
    large held-out request set.

    Returns:
      {"behaviour", "rates", "mon", "steer", "sample", "preflight", "sweep"}.
    """
    s, d = cfg.sweep, cfg.data
    tok = point.model.tokenizer
    behaviour = unsteered_behaviour(point.model, evalset.prompts(tok, cfg), cfg)
    shared = draws or Draws(np.zeros((0, evalset.num_requests)), np.zeros((0, 0)))
    rates = failure_rates(behaviour, evalset, shared)
    mon = monitoring_value(behaviour, vs, evalset, draws, cfg, out)
    cues = tuple(d.get("sweep_cues") or ()) or None  # the sweep's prompts: these cues only
    sample = steered_sample(
        evalset, {t: behaviour[t] for t in FAILURE_TYPES}, shared.weights,
        failing=int(s.failing_requests), ok=int(s.ok_requests), cues=cues, seed=cfg.seed,
    )  # fmt: skip
    preflight = power_preflight(behaviour, evalset, sample, rates, cfg, point.label)
    sweep_dir = None if out is None else os.path.join(out, "sweep")
    res = run_steering(point, vs, sample.evalset.prompts(tok, cfg), cfg, sweep_dir)["results"]
    steer = steering_value(res, sample, draws, cfg)
    return {"behaviour": behaviour, "rates": rates, "mon": mon, "steer": steer,
            "sample": sample, "preflight": preflight, "sweep": res}  # fmt: skip


def analyse_point(
    point: AxisPoint,
    cfg,
    workdir: str,
    rng: Array,
    reference,
    evalset: EvalSet,
    draws: Draws,
    *,
    validation_arm=None,
) -> dict:
    """Every measurement at one axis point; returns its row and the draws for the break point.

    `validation_arm`, when given, is called with (point, VectorSet) and returns the VectorSet
    whose emotion entries are the planted validation directions (`emojax.validation`): the
    stability diagnostics still describe the real emotion vectors, the sweep's (selectivity,
    style) the planted ones.
    """
    out = os.path.join(workdir, "points", point.label.replace("/", "_"))
    os.makedirs(out, exist_ok=True)
    d, b = cfg.data, cfg.breakpoint
    k_ex, k_rest = jax.random.split(rng)
    ext = run_extraction(point, cfg, out, k_ex, reference)
    ex, report = ext["extraction"], ext["report"]
    vs = ex.vector_sets[cfg.sweep.method]
    arm = vs if validation_arm is None else validation_arm(point, vs)

    values = point_values(point, arm, evalset, draws, cfg, out)
    behaviour, rates, mon, steer = (values[k] for k in ("behaviour", "rates", "mon", "steer"))
    res, sample = values["sweep"], values["sample"]
    layer_pos = 0  # the first sweep layer is the headline injection layer
    summary = res.summary[str(res.meta["layers"][layer_pos])]
    # Policy-dominance index: refusal score explained by the control projections.
    site = mon["site"]
    acts = behaviour["acts"][:, site]
    ctrl_dirs = np.stack([vs.vectors[vs.index(k), min(site, vs.vectors.shape[1] - 1)]
                          for k in d.controls])  # fmt: skip
    ctrl_proj = acts @ (ctrl_dirs / np.linalg.norm(ctrl_dirs, axis=1, keepdims=True)).T
    pdi = bp.policy_dominance_index(behaviour["policy_logit"], ctrl_proj)

    names = list(report["concepts"])
    emo_rows = [names.index(e) for e in d.emotions if e in names]
    vec_site = min(site, report["split_half"].estimate.shape[1] - 1)
    split_half = _mean_interval(report["split_half"], emo_rows, vec_site)
    cross_domain = _mean_interval(report["cross_domain"], emo_rows, vec_site)
    cross_model = (1.0, 1.0, 1.0)
    if ext["cross"] is not None and ext["cross"]["cosine"] is not None:
        cross_model = _mean_interval(ext["cross"]["cosine"], emo_rows, vec_site)
    elif ext["cross"] is not None:
        cross_model = _mean_interval(ext["cross"]["proj_corr"], emo_rows, vec_site)
    cs = summary["cross_steering"]
    rows_cs = cs["rows"]
    emo_cs = [rows_cs.index(e) for e in d.emotions if e in rows_cs]
    selectivity = float(np.nanmean(np.asarray(cs["selectivity"])[emo_cs]))
    sel_p = cs.get("selectivity_null_p")
    selectivity_p = float(np.nanmedian(np.asarray(sel_p)[emo_cs])) if sel_p else float("nan")
    offtarget = float(np.nanmean(np.asarray(cs["offtarget_kl_per_unit_effect"])[emo_cs]))
    style = style_summary(summary, d.emotions)
    steerability = {}
    for name in list(d.emotions) + list(d.controls):
        entry = summary["steerability"].get(name, {})
        keep = ("slope", "ci", "null_z", "null_p", "anti_steerable_fraction")
        steerability[name] = {
            t: {k: entry[t].get(k) for k in keep} for t in FAILURE_TYPES if entry.get(t)
        }
    rate = {t: rates[t]["estimate"] for t in FAILURE_TYPES}
    thresholds = bp.DiagnosticThresholds(
        controlled_auroc=b.controlled_auroc, controlled_failure=b.controlled_failure,
        style_ratio=b.style_ratio, alignment=b.alignment, selectivity=b.selectivity,
    )  # fmt: skip
    common = dict(
        controls_auroc={t: v.get("auroc_controls", float("nan"))
                        for t, v in mon["types"].items()},
        failure_rate=rate, cross_model_cosine=cross_model[0], selectivity=selectivity,
        thresholds=thresholds,
    )  # fmt: skip
    diag = bp.diagnostics(style_vs_safety=style["ratio"], **common)
    # Mostly stylistic: for most emotions the style effect is significant and no safety
    # effect is (intervals from the sweep's request bootstrap).
    per_emotion = [
        bp.diagnostics(style_effect=e["style"], safety_effect=e["safety"], **common)
        for e in style["intervals"]
    ]
    if per_emotion:
        votes = [x["emotion_mostly_stylistic"] for x in per_emotion]
        diag["emotion_mostly_stylistic"] = bool(sum(votes) > len(votes) / 2)
    row = {
        "label": point.label,
        "source": point.source,
        "model_sha256": point.digest,
        "policy_dominance": pdi,
        **{
            f"{t}_rate{k}": rates[t][f]
            for t in FAILURE_TYPES
            for k, f in (("", "estimate"), ("_lo", "lo"), ("_hi", "hi"))
        },
        **{f"{t}_failing_requests": mon["types"][t]["num_failing_requests"] for t in FAILURE_TYPES},
        **{
            f"{t}_steered_{k}": sample.strata[t][k][0]
            for t in FAILURE_TYPES
            for k in ("failing", "ok")
        },  # fmt: skip
        "refusal_rate": float(np.mean(behaviour["refused"])),
        **_value_columns("delta_mon", mon["types"], values["preflight"], cfg),
        **_value_columns("delta_steer", steer, values["preflight"], cfg),
        "split_half": split_half[0],
        "split_half_lo": split_half[1],
        "split_half_hi": split_half[2],
        "cross_domain": cross_domain[0],
        "cross_domain_lo": cross_domain[1],
        "cross_domain_hi": cross_domain[2],
        "cross_model_cosine": cross_model[0],
        "cross_model_cosine_lo": cross_model[1],
        "cross_model_cosine_hi": cross_model[2],
        "selectivity": selectivity,
        "selectivity_null_p": selectivity_p,
        "offtarget_kl_per_unit_effect": offtarget,
        "style_vs_safety": style["ratio"],
        "style_effect": style["style"],
        "style_vs_safety_defined": style["defined"],
        "probe_site": site,
        "sweep_layer": int(res.meta["layers"][layer_pos]),
        **{f"diag_{k}": v for k, v in diag.items()},
    }
    detail = {
        "row": row,
        "steerability": steerability,
        "delta_mon": summarise(mon["types"]),
        "delta_steer": summarise(steer),
        "failure_rates": {
            t: {k: v for k, v in r.items() if k != "samples"} for t, r in rates.items()
        },
        "steered": sample.strata,
        "power_preflight": values["preflight"],
        "cross_steering": cs,
        "style_vs_safety": summary.get("style_vs_safety", {}),
        "control_cosine": _control_cosine(report, vec_site),
    }
    results.write_json(os.path.join(out, "point.json"), detail)
    return {
        "row": row,
        "detail": detail,
        "values": {
            **{f"delta_mon/{t}": v for t, v in mon["types"].items()},
            **{f"delta_steer/{t}": v for t, v in steer.items()},
        },
        "rates": rates,
        "examples": example_generations(
            res,
            sample.evalset,
            {t: v.get("chosen_emotion_cell") for t, v in steer.items()},
            point.model.tokenizer,
        ),  # fmt: skip
        "captured": ex.captured,
        "arm": arm,
        "matrix": np.asarray(cs["matrix"], np.float64),
        "matrix_rows": list(cs["rows"]),
        "matrix_cols": list(cs["cols"]),
    }


def style_summary(summary: dict, emotions) -> dict:
    """Median style-vs-safety ratio over emotions and failure types where it is defined.

    The ratio |style effect| / |safety effect| exists only where the safety effect's interval
    excludes 0 (`emojax.metrics.influence.style_vs_safety`); elsewhere it is "not defined".
    """
    ratios, styles, intervals = [], [], []
    for e in emotions:
        entry = summary.get("style_vs_safety", {}).get(e)
        if not entry:
            continue
        styles.append(entry["style"]["estimate"])
        num = lambda x: float("nan") if x is None else float(x)
        intervals.append({
            "style": (num(entry["style"]["lo"]), num(entry["style"]["hi"])),
            "safety": {t: (num(v["lo"]), num(v["hi"])) for t, v in entry["safety"].items()},
        })  # fmt: skip
        for t in FAILURE_TYPES:
            r = entry.get("ratio", {}).get(t)
            if r is not None:
                ratios.append(r)
    return {
        "ratio": float(np.median(ratios)) if ratios else float("nan"),
        "defined": bool(ratios),
        "style": float(np.median(styles)) if styles else float("nan"),
        "intervals": intervals,
    }


def _control_cosine(report: dict, site: int) -> dict:
    if "control_cosine" not in report:
        return {}
    iv = report["control_cosine"]
    return {
        e: {k: float(np.asarray(iv.estimate)[i, j, site]) for j, k in enumerate(report["controls"])}
        for i, e in enumerate(report["emotions"])
    }
