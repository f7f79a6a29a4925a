"""The end-to-end break-point analysis: every stage, at every point of the axis.

Data flow per axis point (DESIGN.md §1):
`loading -> extract (vectors, stability) -> sweep (steering readouts, modularity, Δ_steer)
-> probes (the model's own failures, Δ_mon) -> breakpoint`.

Everything a point produces is written under `<workdir>/points/<label>/`; the axis-level
tables, plots and `report.md` are written by `emojax.report`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging as std_logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from emojax import breakpoint as bp
from emojax import concepts, extract, probes, results, sweep, vectors
from emojax import readouts as ro
from emojax.generate import generate
from emojax.loading import Model, load_model
from emojax.metrics import incremental, stability
from emojax.model import forward
from emojax.report import write_csv, write_outputs
from emojax.stats import require_finite

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Progress.


class Progress:
    """Stage / item progress lines with items per second and an ETA."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done = total, what, 0
        self.start = time.perf_counter()

    def step(self, message: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        logging.info(
            "[%s %d/%d] %s | %.2f %s/min | elapsed %.0fs | ETA %.0fs",
            self.what, self.done, self.total, message, 60 * rate, self.what, elapsed, eta,
        )  # fmt: skip


class _DropInfo(std_logging.Filter):
    """Drops INFO records of chatty libraries (orbax logs every checkpoint step)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno > std_logging.INFO or "orbax" not in record.pathname


def quiet_library_logs() -> None:
    """Keeps the progress lines readable: orbax's INFO lines are dropped."""
    logging.get_absl_handler().addFilter(_DropInfo())


def stage(name: str) -> Callable:
    """Logs the start and duration of a pipeline stage."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            logging.info("  stage %s ...", name)
            out = fn(*args, **kwargs)
            logging.info("  stage %s done in %.1fs", name, time.perf_counter() - t0)
            return out

        return run

    return wrap


# ---------------------------------------------------------------------------------------------
# The axis.


@dataclasses.dataclass
class AxisPoint:
    """One model on the policy-dominance axis.

    Attributes:
      label: axis label ("instruct", "α=0.50", ...).
      source: where the weights come from (a path, or the dial's two paths and α).
      model: the loaded model (for a dial point, interpolated params).
      digest: a content hash of the weights' source for provenance.
    """

    label: str
    source: str
    model: Model
    digest: str


def resolve_paths(cfg, names: list[str]) -> dict[str, str]:
    """Zoo names -> built zoo directories (built on demand); other names are kept as given."""
    from emojax import zoo

    out = {n: n for n in names}
    wanted = [n for n in names if n in zoo.ZOO_MODELS and not os.path.isdir(n)]
    if wanted and cfg.zoo.get("enabled", True):
        logging.info("building / reusing the model zoo for %s", wanted)
        built = zoo.build_zoo(cfg, cfg.zoo.cache_dir or None)
        out.update({n: str(built[n]) for n in wanted})
    return out


def load_point_model(path: str, cfg) -> Model:
    """Loads a checkpoint; on a multi-device mesh straight into sharded arrays (`mesh` section).

    With one device this is `emojax.load_model`. With several, each device reads only its block
    of every tensor (`emojax.sharding.load_sharded_params`) and `jax.jit` runs every stage on
    the sharded weights unchanged.
    """
    dtype = getattr(jnp, cfg.dtype)
    if jax.device_count() == 1:
        return load_model(path, dtype=dtype)
    from emojax import sharding
    from emojax.loading import load_tokenizer, resolve_path

    path = resolve_path(path)
    mesh = sharding.mesh_from_config(cfg.mesh)
    rules = sharding.rules_from_config(cfg.mesh.get("rules"))
    config, params = sharding.load_sharded_params(path, mesh, dtype=dtype, rules=rules)
    return Model(config=config, params=params, tokenizer=load_tokenizer(path), path=path)


def axis_points(cfg) -> Iterator[AxisPoint]:
    """Yields the axis points one at a time (one model in memory at a time, plus dial ends)."""
    b = cfg.breakpoint
    if b.axis == "models":
        paths = resolve_paths(cfg, list(b.models))
        labels = list(b.labels) if b.get("labels") else list(b.models)
        if len(labels) != len(b.models):
            raise ValueError(f"{len(labels)} labels for {len(b.models)} models")
        for label, name in zip(labels, b.models, strict=True):
            path = paths[name]
            model = load_point_model(path, cfg)
            yield AxisPoint(label, os.path.abspath(path), model, results.model_hash(path))
        return
    if b.axis != "dial":
        raise ValueError(f"breakpoint.axis must be 'models' or 'dial', not {b.axis!r}")
    paths = resolve_paths(cfg, [b.dial_base, b.dial_tuned])
    base = load_point_model(paths[b.dial_base], cfg)
    tuned = load_point_model(paths[b.dial_tuned], cfg)
    bp.check_dial_compatible(base.config, tuned.config, base.tokenizer, tuned.tokenizer)
    hashes = (results.model_hash(paths[b.dial_base]), results.model_hash(paths[b.dial_tuned]))
    for alpha in b.alphas:
        params = bp.interpolate_params(base.params, tuned.params, jnp.float32(alpha))
        model = dataclasses.replace(tuned, params=params, path=f"dial α={alpha:g}")
        yield AxisPoint(
            f"α={alpha:g}",
            f"{paths[b.dial_base]} + {alpha:g}·({paths[b.dial_tuned]} − base)",
            model,
            results.fingerprint([hashes[0], hashes[1], float(alpha)]),
        )


# ---------------------------------------------------------------------------------------------
# Evaluation prompts with emotional cues (shared by the sweep and the probes).


def cued_prompts(tokenizer, cfg, *, per_kind: dict[str, int], num_neutral: int, split: str):
    """Evaluation prompts × emotional cues, tokenised through the chat template."""
    items = []
    cues = tuple(cfg.data.cues)
    for kind, count in per_kind.items():
        per_cue = max(1, -(-count // len(cues))) if count else 0
        for cue in cues:
            items += concepts.load_eval(kind, split, cue=cue, limit=per_cue or None)
    neutral = concepts.load_eval("neutral", split, limit=num_neutral)
    return sweep.SweepPrompts.from_texts(
        tokenizer,
        [q.text for q in items],
        [q.kind == "harmful" for q in items],
        [q.kind for q in items],
        [q.text for q in neutral],
        template_source=cfg.extract.template_source or None,
        ids=[q.id for q in items],
    )


# ---------------------------------------------------------------------------------------------
# Stages.


@stage("extract")
def run_extraction(point: AxisPoint, cfg, out: str, rng: Array, reference) -> dict:
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


@functools.partial(jax.jit, static_argnames=("config",))
def _last_token_pass(params, config, tokens, mask, refusal):
    """Residual at the last prompt token [B, L+1, D] (float32) and the refusal score [B]."""
    last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)
    out = forward(params, config, tokens, attention_mask=mask, logit_positions=last)
    acts = jnp.swapaxes(out.resid[:, :, -1].astype(jnp.float32), 0, 1)
    return acts, ro.refusal_score(out.logits[:, 0], refusal)


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    pad = np.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad]) if len(pad) else x


@stage("behaviour")
def unsteered_behaviour(model: Model, prompts, cfg) -> dict[str, Any]:
    """The unsteered model's own behaviour and last-token features on `prompts`.

    Returns:
      acts [N, L+1, D], policy_logit [N] (refusal score), texts, and the behaviour labels of
      `emojax.readouts.behaviour_labels` plus `failure` = harmful compliance | over-refusal.
    """
    mcfg, tok, p = model.config, model.tokenizer, cfg.probes
    refusal = ro.refusal_mask(np.asarray(ro.refusal_token_ids(tok)), mcfg.vocab_size)
    eos = tuple(mcfg.eos_token_id) or (tok.eos_token_id,)
    n, t = prompts.tokens.shape
    bs = min(p.batch_size, n)  # one block size (last block padded): one compile
    acts, logit, texts = [], [], []
    for start in range(0, n, bs):
        k = min(bs, n - start)
        tokens = jnp.asarray(_pad_rows(prompts.tokens[start : start + k], bs))
        mask = jnp.asarray(_pad_rows(prompts.mask[start : start + k], bs))
        mask = mask.at[k:, -1].set(1)  # padded rows: one real token keeps them finite
        a, s = _last_token_pass(model.params, mcfg, tokens, mask, refusal)
        ids = generate(
            model.params, mcfg, tokens, max_new_tokens=p.max_new_tokens, attention_mask=mask
        )
        acts.append(np.asarray(a)[:k])
        logit.append(np.asarray(s)[:k])
        texts += ro.decode_responses(tok, np.asarray(ids)[:k, t:], eos)
    labels = ro.behaviour_labels(texts, prompts.harmful)
    labels["failure"] = labels["harmful_compliance"] | labels["over_refusal"]
    require_finite(np.concatenate(acts), f"last-token activations of {model.path or 'model'}")
    return {"acts": np.concatenate(acts), "policy_logit": np.concatenate(logit), "texts": texts,
            **labels}  # fmt: skip


def headline_site(spec: float | int, num_sites: int) -> int:
    """An int residual-site index, or a depth fraction of the sites 0..L."""
    if isinstance(spec, float) and 0.0 <= spec < 1.0:
        return int(round(spec * (num_sites - 1)))
    return int(spec) % num_sites


@stage("probes")
def run_probes(behaviour: dict, vs: vectors.VectorSet, cfg, out: str) -> dict:
    """Δ_mon (controls + emotion vs controls) at every residual site; draws at the headline."""
    p, d = cfg.probes, cfg.data
    controls, emotions = tuple(d.controls), tuple(d.emotions)
    directions = {k: vs.vectors[vs.index(k)] for k in controls + emotions}
    labels = behaviour[p.label].astype(np.float32)
    acts = behaviour["acts"]
    site = headline_site(p.layer, acts.shape[1])
    num_draws = p.num_refit_bootstrap or p.num_bootstrap
    info = {"num_prompts": int(len(labels)), "num_failures": int(labels.sum()), "site": site}
    if labels.min() == labels.max():
        # No failure (or only failures) to predict: a monitor cannot add value. Δ_mon = 0.
        info.update(delta_mon=0.0, delta_mon_lo=0.0, delta_mon_hi=0.0, one_class=True,
                    auroc_controls=float("nan"), auroc_controls_emotion=float("nan"))  # fmt: skip
        results.write_json(os.path.join(out, "probes.json"), info)
        return {**info, "samples": np.zeros(num_draws)}
    fs = probes.build_feature_sets(
        acts, directions, behaviour["policy_logit"], controls=controls, emotions=emotions,
        residual_dims=0,
    )  # fmt: skip
    mon = probes.monitor(
        fs.subset(("controls", "controls+emotion")),
        labels,
        num_refit_bootstrap=p.num_refit_bootstrap,
        seed=p.seed,
        l2_grid=tuple(p.l2_grid),
        num_folds=p.num_folds,
        num_bootstrap=p.num_bootstrap,
        fpr=p.fpr,
        num_steps=p.num_steps,
    )
    rows = mon.layer_rows()
    write_csv(os.path.join(out, "probes.csv"), rows)
    row = rows[site]
    samples = np.asarray(mon.arrays.delta_mon_samples)[site]
    results.save_arrays(os.path.join(out, "probes.npz"), {
        "labels": labels, "policy_logit": behaviour["policy_logit"],
        "oof_logits": np.asarray(mon.arrays.oof_logits), "delta_mon_samples": samples,
    })  # fmt: skip
    info.update(
        one_class=False,
        delta_mon=row["delta_mon"],
        delta_mon_lo=row["delta_mon_lo"],
        delta_mon_hi=row["delta_mon_hi"],
        auroc_controls=row["auroc[controls]"],
        auroc_controls_emotion=row["auroc[controls+emotion]"],
        tpr_at_fpr_controls_emotion=row["tpr_at_fpr[controls+emotion]"],
        lrt_p=row["lrt_p"],
        per_site=[{k: r[k] for k in ("delta_mon", "delta_mon_lo", "delta_mon_hi")} for r in rows],
    )
    results.write_json(os.path.join(out, "probes.json"), info)
    return {**info, "samples": samples}


@stage("sweep")
def run_steering(point: AxisPoint, vs: vectors.VectorSet, prompts, cfg, out: str) -> dict:
    res = sweep.run_sweep(point.model, vs, prompts, cfg.sweep, os.path.join(out, "sweep"))
    return {"results": res}


def delta_steer_draws(res: sweep.SweepResults, layer_pos: int, kappa: float, cfg) -> dict:
    """Δ_steer at KL budget κ, the best emotion vector per resample (paired over prompts).

    The emotion vector that adds most is taken in each resample: the break point then asks
    that *no* emotion vector still adds steering value.
    """
    arr, meta = res.arrays, res.meta
    if "joint_harmful_compliance" not in arr:
        raise ValueError("the sweep has no joint control x emotion grid (sweep.joint_*)")
    pairs = meta["joint_pairs"]
    zero = np.isclose(np.asarray(meta["joint_coefs"]), 0.0)
    fail = np.fmax(arr["joint_harmful_compliance"][layer_pos], arr["joint_over_refusal"][layer_pos])
    kl = arr["joint_kl"][layer_pos]
    per_emotion = {}
    for emotion in sorted({e for _, e in pairs}):
        sel = [i for i, (_, e) in enumerate(pairs) if e == emotion]
        f = fail[sel].reshape(-1, fail.shape[-1])
        k = kl[sel].reshape(-1, kl.shape[-1])
        ctrl = np.broadcast_to(zero[None, None, :], fail[sel].shape[:3]).reshape(-1)
        per_emotion[emotion] = incremental.incremental_steering_value(
            f, k, ctrl, kappa, num=cfg.breakpoint.num_bootstrap, seed=cfg.seed
        )
    best = max(per_emotion, key=lambda e: per_emotion[e]["delta"])
    samples = np.max(np.stack([v["samples"] for v in per_emotion.values()]), axis=0)
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return {
        "delta_steer": float(per_emotion[best]["delta"]),
        "delta_steer_lo": float(lo),
        "delta_steer_hi": float(hi),
        "best_emotion": best,
        "per_emotion": {
            e: {k: v[k] for k in ("delta", "lo", "hi")} for e, v in per_emotion.items()
        },
        "samples": samples,
    }


# ---------------------------------------------------------------------------------------------
# One axis point.


def _mean_interval(iv, rows: list[int], site: int) -> tuple[float, float, float]:
    """Mean over `rows` (concepts) of an Interval [C, L] at one site (NaN where undefined)."""

    def pick(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: e.g. one domain only
            return float(np.nanmean(np.asarray(x)[rows, site]))

    return pick(iv.estimate), pick(iv.lo), pick(iv.hi)


def analyse_point(point: AxisPoint, cfg, workdir: str, rng: Array, reference) -> dict:
    """Every measurement at one axis point; returns its row and the draws for the break point."""
    out = os.path.join(workdir, "points", point.label.replace("/", "_"))
    os.makedirs(out, exist_ok=True)
    d, b = cfg.data, cfg.breakpoint
    k_ex, k_rest = jax.random.split(rng)
    ext = run_extraction(point, cfg, out, k_ex, reference)
    ex, report = ext["extraction"], ext["report"]
    vs = ex.vector_sets[cfg.sweep.method]

    tok = point.model.tokenizer
    sweep_prompts = cued_prompts(
        tok, cfg, per_kind=dict(cfg.sweep.prompts_per_kind),
        num_neutral=cfg.sweep.neutral_prompts, split=d.eval_split,
    )  # fmt: skip
    res = run_steering(point, vs, sweep_prompts, cfg, out)["results"]
    layer_pos = 0  # the first sweep layer is the headline injection layer
    summary = res.summary[str(res.meta["layers"][layer_pos])]
    steer = delta_steer_draws(res, layer_pos, b.kappa, cfg)

    probe_prompts = cued_prompts(
        tok, cfg, per_kind={k: cfg.probes.prompts_per_kind for k in cfg.probes.kinds},
        num_neutral=1, split=cfg.probes.split,
    )  # fmt: skip
    behaviour = unsteered_behaviour(point.model, probe_prompts, cfg)
    mon = run_probes(behaviour, vs, cfg, out)

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
    offtarget = float(np.nanmean(np.asarray(cs["offtarget_kl_per_unit_effect"])[emo_cs]))
    style = [summary["style_vs_safety"][e] for e in d.emotions if e in summary["style_vs_safety"]]
    style_ratio = float(np.nanmedian([s if np.isscalar(s) else s["ratio"] for s in style])) \
        if style else float("nan")  # fmt: skip
    steerability = {}
    for name in list(d.emotions) + list(d.controls):
        entry = summary["steerability"].get(name, {}).get("failure")
        if entry:
            keys = ("slope", "ci", "null_z", "null_p", "anti_steerable_fraction")
            steerability[name] = {k: entry.get(k) for k in keys}
    failure_rate = float(np.mean(behaviour["failure"]))
    diag = bp.diagnostics(
        controls_auroc=mon["auroc_controls"] if not mon["one_class"] else 1.0,
        failure_rate=failure_rate,
        style_vs_safety=style_ratio,
        cross_model_cosine=cross_model[0],
        selectivity=selectivity,
        thresholds=bp.DiagnosticThresholds(
            controlled_auroc=b.controlled_auroc, controlled_failure=b.controlled_failure,
            style_ratio=b.style_ratio, alignment=b.alignment, selectivity=b.selectivity,
        ),
    )  # fmt: skip
    row = {
        "label": point.label,
        "source": point.source,
        "model_sha256": point.digest,
        "policy_dominance": pdi,
        "failure_rate": failure_rate,
        "harmful_compliance_rate": float(np.mean(behaviour["harmful_compliance"])),
        "over_refusal_rate": float(np.mean(behaviour["over_refusal"])),
        "refusal_rate": float(np.mean(behaviour["refused"])),
        "delta_mon": mon["delta_mon"],
        "delta_mon_lo": mon["delta_mon_lo"],
        "delta_mon_hi": mon["delta_mon_hi"],
        "auroc_controls": mon["auroc_controls"],
        "auroc_controls_emotion": mon["auroc_controls_emotion"],
        "delta_steer": steer["delta_steer"],
        "delta_steer_lo": steer["delta_steer_lo"],
        "delta_steer_hi": steer["delta_steer_hi"],
        "delta_steer_best_emotion": steer["best_emotion"],
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
        "offtarget_kl_per_unit_effect": offtarget,
        "style_vs_safety": style_ratio,
        "probe_site": site,
        "sweep_layer": int(res.meta["layers"][layer_pos]),
        **{f"diag_{k}": v for k, v in diag.items()},
    }
    detail = {
        "row": row,
        "steerability": steerability,
        "delta_steer_per_emotion": steer["per_emotion"],
        "cross_steering": cs,
        "control_cosine": _control_cosine(report, vec_site),
        "probes": {k: v for k, v in mon.items() if k != "samples"},
    }
    results.write_json(os.path.join(out, "point.json"), detail)
    return {
        "row": row,
        "detail": detail,
        "mon_samples": np.asarray(mon["samples"], np.float64),
        "steer_samples": np.asarray(steer["samples"], np.float64),
        "captured": ex.captured,
        "matrix": np.asarray(cs["matrix"], np.float64),
        "matrix_rows": list(cs["rows"]),
        "matrix_cols": list(cs["cols"]),
    }


def _control_cosine(report: dict, site: int) -> dict:
    if "control_cosine" not in report:
        return {}
    iv = report["control_cosine"]
    return {
        e: {k: float(np.asarray(iv.estimate)[i, j, site]) for j, k in enumerate(report["controls"])}
        for i, e in enumerate(report["emotions"])
    }


# ---------------------------------------------------------------------------------------------
# The whole axis.


def run(cfg, workdir: str) -> dict:
    """Runs the analysis at every axis point and finds the break point.

    Returns:
      The summary dict (also written to `<workdir>/summary.json` by `emojax.report`).
    """
    os.makedirs(workdir, exist_ok=True)
    b = cfg.breakpoint
    num_points = len(b.alphas) if b.axis == "dial" else len(b.models)
    progress = Progress(num_points, "axis points")
    rng = jax.random.key(cfg.seed)
    points, reference = [], None
    t_start = time.perf_counter()
    for i, point in enumerate(axis_points(cfg)):
        logging.info("axis point %d/%d: %s (%s)", i + 1, num_points, point.label, point.source)
        result = analyse_point(point, cfg, workdir, jax.random.fold_in(rng, i), reference)
        if reference is None:
            reference = {"captured": result["captured"], "label": point.label}
        result.pop("captured")
        points.append(result)
        r = result["row"]
        progress.step(
            f"{point.label}: Δ_mon {r['delta_mon']:+.3f} [{r['delta_mon_lo']:+.3f}, "
            f"{r['delta_mon_hi']:+.3f}], Δ_steer {r['delta_steer']:+.3f} "
            f"[{r['delta_steer_lo']:+.3f}, {r['delta_steer_hi']:+.3f}]"
        )
    labels = [p["row"]["label"] for p in points]
    draws = lambda key, stat: {
        "est": np.array([p["row"][stat] for p in points]),
        "lo": np.array([p["row"][f"{stat}_lo"] for p in points]),
        "hi": np.array([p["row"][f"{stat}_hi"] for p in points]),
        "samples": _stack_draws([p[key] for p in points]),
    }
    mon, steer = draws("mon_samples", "delta_mon"), draws("steer_samples", "delta_steer")
    brk = bp.find_break_point(labels, mon, steer, b.mon_threshold, b.steer_threshold)
    seconds = time.perf_counter() - t_start
    from emojax import sharding

    if not sharding.is_writer():  # multi-host: process 0 writes the axis-level outputs
        return {"break_point": brk.to_json(), "labels": labels}
    return write_outputs(cfg, workdir, points, mon, steer, brk, seconds)


def _stack_draws(draws: list[np.ndarray]) -> np.ndarray:
    """[P, R] from per-point draws of possibly different lengths (truncate to the shortest)."""
    r = min(len(x) for x in draws)
    return np.stack([np.asarray(x)[:r] for x in draws])
