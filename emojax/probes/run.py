"""The `scripts/probes.py` run: the incremental monitoring value Δ_mon of every model, per layer.

Per model, the evaluation prompts (kinds x emotional cues) run unsteered; the labels are the
model's own failures on them (`emojax.readouts.behaviour_labels` of its greedy responses); the
features are last-prompt-token projections on the control and emotion directions, the policy
logit (refusal score) and the top residual principal components. Every probe (feature set x
layer x fold x l2 x resample) is fitted in one program (`emojax.probes.monitor`). This module
sits above `emojax.pipeline` (model loading, the unsteered behaviour), so `emojax.probes` does
not import it.

Writes to `<workdir>/<model>/`: `probes.csv` (one row per layer), `probes.json`, `probes.npz`,
`delta_mon.png` and, with `config.probes.shift_reference`, `shift.csv` (mean activation shift
along each direction relative to the reference model); to `<workdir>/`: `summary.md`,
`summary.csv` (headline Δ_mon per model), `config.json` (provenance) and, first, `run.json`
(config and flags, their fingerprint).

Dimension letters: N prompts, L residual sites, D model, S feature sets, R bootstrap draws.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, logging

from emojax import pipeline, plots, results
from emojax.extract.extraction import load_or_extract_vectors
from emojax.loading import validate_checkpoint
from emojax.probes.features import build_feature_sets
from emojax.probes.scan import monitor
from emojax.probes.shift import finetune_shift
from emojax.report import write_csv
from emojax.workdir import claim_workdir, script_config, start_on_writer


def _zoo_models(spec: str, cfg) -> dict[str, str]:
    """`{name: checkpoint dir}` (`emojax.zoo.resolve_models`); a bad name is a usage error."""
    from emojax.zoo import resolve_models

    try:
        return resolve_models(spec, cfg)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def eval_prompts(tokenizer, cfg):
    """Tokenised evaluation prompts (`probes.kinds` x `probes.cues`) as `sweep.SweepPrompts`."""
    from emojax import concepts
    from emojax.sweep import SweepPrompts

    p = cfg.probes
    items = [
        q
        for kind in p.kinds
        for cue in p.cues
        for q in concepts.load_eval(
            kind,
            p.split,
            cue=cue,
            limit=p.prompts_per_kind or None,
            data_dir=cfg.data.dir or None,
            rendering=cfg.data.get("rendering", "zoo"),
        )
    ]
    return SweepPrompts.from_texts(
        tokenizer,
        [q.text for q in items],
        [q.kind == "harmful" for q in items],
        [q.kind for q in items],
        [items[0].text],  # neutral text is not used here
        template_source=cfg.extract.template_source or None,
        ids=[q.id for q in items],
    )


def monitor_kwargs(cfg) -> dict:
    """`emojax.probes.monitor` keyword arguments from the run config's `probes` section."""
    p = cfg.probes
    return {
        "seed": p.seed,
        "l2_grid": tuple(p.l2_grid),
        "num_folds": p.num_folds,
        "num_bootstrap": p.num_bootstrap,
        "fpr": p.fpr,
        "num_steps": p.num_steps,
    }


def probe_one_model(name: str, path: str, cfg, workdir: str, reference: dict | None, given) -> dict:
    """Probes of one model into `<workdir>/<name>/`.

    Args:
      name: the model's name (its folder in the workdir).
      path: its checkpoint.
      cfg: the run config (`probes`, `data`, `extract`).
      workdir: the output directory.
      reference: `{"name", "acts" [N, L, D]}` of the shift reference model, or None.
      given: the --vectors VectorSet (None: extracted for this model, `probes.method`).

    Returns:
      The model's summary row (headline layer, Δ_mon with its interval, AUROCs, LR p; Δ_mon
      None when every label is the same) with `_acts` [N, L, D], its last-token activations.
    """
    p, out = cfg.probes, os.path.join(workdir, name)
    os.makedirs(out, exist_ok=True)
    model = pipeline.load_point_model(path, cfg)
    vectors = given if given is not None else load_or_extract_vectors("", model, cfg, p.method)
    prompts = eval_prompts(model.tokenizer, cfg)
    t0 = time.perf_counter()
    run = pipeline.unsteered_behaviour(model, prompts, cfg)
    run["failure"] = run["harmful_compliance"] | run["over_refusal"]  # `probes.label` default
    seconds = {"unsteered": time.perf_counter() - t0}
    controls, emotions = tuple(cfg.data.controls), tuple(cfg.data.emotions)
    directions = {k: vectors.vectors[vectors.index(k)] for k in controls + emotions}
    labels = run[p.label].astype(np.float32)
    info = {
        "model": name,
        "model_path": os.path.abspath(path),
        "num_prompts": int(len(labels)),
        "label": p.label,
        "num_positive": int(labels.sum()),
        "rates": {k: float(np.mean(run[k])) for k in ("refused", "harmful_compliance",
                                                      "over_refusal", "failure")},
        "vectors": vectors.method,
    }  # fmt: skip
    if reference is not None and reference["acts"].shape == run["acts"].shape:
        shift = finetune_shift(
            reference["acts"], run["acts"], directions, jax.random.key(p.seed), num=p.num_bootstrap
        )
        write_csv(os.path.join(out, "shift.csv"), [
            {"direction": k, "layer": layer, "reference": reference["name"],
             "shift": float(iv.estimate[layer]), "lo": float(iv.lo[layer]),
             "hi": float(iv.hi[layer]),
             # in units of the layer's median residual norm (the steering unit)
             "shift_norm_units": float(iv.estimate[layer] / vectors.layer_norms[layer])}
            for k, iv in shift.items() for layer in range(len(iv.estimate))
        ])  # fmt: skip
    if labels.min() == labels.max():
        logging.warning("%s: every label is %d; no probe to fit", name, labels[0])
        results.write_json(os.path.join(out, "probes.json"), {**info, "skipped": "one class"})
        return {**info, "delta_mon": None, "_acts": run["acts"]}
    fs = build_feature_sets(
        run["acts"], directions, run["policy_logit"], controls=controls, emotions=emotions,
        residual_dims=p.residual_dims,
    )  # fmt: skip
    t0 = time.perf_counter()
    # Refits only where Δ_mon needs them; the residual upper bound is fitted once.
    main = monitor(
        fs.subset(("controls", "controls+emotion")),
        labels,
        num_refit_bootstrap=p.num_refit_bootstrap,
        **monitor_kwargs(cfg),
    )
    rows = main.layer_rows()
    set_names = list(main.set_names)
    if "residual" in fs.names:
        upper = monitor(fs.subset(("residual",)), labels, **monitor_kwargs(cfg))
        for row, extra in zip(rows, upper.layer_rows(), strict=True):
            row.update({k: v for k, v in extra.items() if "[residual]" in k})
        set_names.append("residual")
    seconds["probes"] = time.perf_counter() - t0
    headline = pipeline.headline_site(p.layer, len(rows))
    write_csv(os.path.join(out, "probes.csv"), rows)
    # Per-prompt and per-draw arrays (Δ_mon draws feed emojax.breakpoint.find_break_point).
    results.save_arrays(os.path.join(out, "probes.npz"), {
        "labels": labels, "policy_logit": run["policy_logit"], "harmful": prompts.harmful,
        "oof_logits": np.asarray(main.arrays.oof_logits),  # [S, L, N]
        "delta_mon_samples": np.asarray(main.arrays.delta_mon_samples),  # [L, R]
    })  # fmt: skip
    summary = {
        **info,
        "layer": headline,
        "delta_mon": rows[headline]["delta_mon"],
        "delta_mon_lo": rows[headline]["delta_mon_lo"],
        "delta_mon_hi": rows[headline]["delta_mon_hi"],
        "auroc_controls": rows[headline]["auroc[controls]"],
        "auroc_controls_emotion": rows[headline]["auroc[controls+emotion]"],
        "auroc_residual": rows[headline].get("auroc[residual]", float("nan")),
        "tpr_at_fpr_controls_emotion": rows[headline]["tpr_at_fpr[controls+emotion]"],
        "lrt_p": rows[headline]["lrt_p"],
    }
    results.write_json(os.path.join(out, "probes.json"), {
        **summary, "columns": dict(zip(fs.names, fs.columns, strict=True)), "layers": rows,
        "seconds": seconds,
    })  # fmt: skip
    plots.plot_probe_layers(os.path.join(out, "delta_mon.png"), rows, set_names, name, headline)
    logging.info("%s: Δ_mon %.3f [%.3f, %.3f] at layer %d (%.1f s of probes)", name,
                 summary["delta_mon"], summary["delta_mon_lo"], summary["delta_mon_hi"],
                 headline, seconds["probes"])  # fmt: skip
    return {**summary, "_acts": run["acts"]}


def summary_markdown(rows: list[dict]) -> str:
    """The headline Δ_mon table: one row per model (`probe_one_model`'s summary rows)."""
    lines = [
        "| model | layer | failures / prompts | AUROC controls | AUROC +emotion | "
        "Δ_mon [95% CI] | LR p | AUROC residual |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("delta_mon") is None:
            lines.append(f"| {r['model']} | – | {r['num_positive']}/{r['num_prompts']} | "
                         "one class: no probe | | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['model']} | {r['layer']} | {r['num_positive']}/{r['num_prompts']} | "
            f"{r['auroc_controls']:.3f} | {r['auroc_controls_emotion']:.3f} | "
            f"{r['delta_mon']:+.3f} [{r['delta_mon_lo']:+.3f}, {r['delta_mon_hi']:+.3f}] | "
            f"{r['lrt_p']:.2g} | {r['auroc_residual']:.3f} |"
        )
    return "\n".join(lines)


def run(cfg, workdir: str, model: str, *, vectors: str = "", overwrite: bool = False) -> str:
    """Probes every model of `model` into `workdir` (the layout in the module docstring).

    Nothing is written before the work directory is claimed (`emojax.workdir`: a different
    config or flags into a non-empty workdir is refused unless `overwrite`, which moves the
    old outputs into `<workdir>/previous-<timestamp>/`) and every checkpoint's config.json and
    weight headers are valid. With `probes.shift_reference` that model runs first (without
    its own probes table unless it is one of `model`). Every file is written atomically.

    Args:
      cfg: the run config (e.g. configs/zoo.py).
      workdir: the output directory.
      model: zoo names, checkpoint directories, "zoo", or a comma-separated list.
      vectors: a VectorSet directory for the one model ('' = extract per model).
      overwrite: use a workdir holding another run's outputs (moved aside first).

    Returns:
      The summary markdown (also written to `<workdir>/summary.md`).

    Raises:
      absl.app.UsageError: `model` names nothing, or `vectors` with several models.
    """
    run_cfg = script_config(cfg, "probes", model=model, vectors=vectors)
    state = claim_workdir(run_cfg, workdir, overwrite=overwrite)  # no writes
    models = _zoo_models(model, cfg)
    if vectors and len(models) > 1:
        raise app.UsageError("--vectors serves one model; drop it to extract per model")
    reference = None
    ref_spec = cfg.probes.shift_reference
    if ref_spec:
        ref_name = os.path.basename(os.path.normpath(ref_spec))
        if ref_name not in models:  # the reference runs first, without its own probes table
            models = {**_zoo_models(ref_spec, cfg), **models}
        else:
            models = {ref_name: models[ref_name], **models}
    for path in models.values():  # config.json and weight headers, before anything is written
        validate_checkpoint(path)
    given = load_or_extract_vectors(vectors, None, cfg, cfg.probes.method) if vectors else None
    start_on_writer(state)  # the first write: run.json (old outputs moved aside if --overwrite)
    results.write_json(
        os.path.join(workdir, "config.json"),
        results.provenance(seed=cfg.seed, models=models, config=cfg),
    )
    rows = []
    for name, path in models.items():
        row = probe_one_model(name, path, cfg, workdir, reference, given)
        if ref_spec and name == os.path.basename(os.path.normpath(ref_spec)):
            reference = {"name": name, "acts": row.get("_acts")}
        row.pop("_acts", None)
        rows.append(row)
    write_csv(
        os.path.join(workdir, "summary.csv"),
        [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows],
    )
    text = "# Incremental monitoring value Δ_mon\n\n" + summary_markdown(rows) + "\n"
    results.write_text(os.path.join(workdir, "summary.md"), text)
    return text
