r"""Monitoring probes: the incremental monitoring value Δ_mon of emotion features, per layer.

Examples:
  python scripts/probes.py --config=configs/zoo.py --model=instruct --workdir=/tmp/probes
  python scripts/probes.py --config=configs/zoo.py --model=zoo --workdir=/tmp/probes
  python scripts/probes.py --config=configs/zoo.py:smoke --model=/path/to/hf_dir \
      --vectors=/tmp/extract/instruct/vectors/diff_of_means --workdir=/tmp/p

`--model` is a zoo name (base, instruct, safety-1..3; built or reused from the cache), a
checkpoint directory, "zoo" (every zoo model) or a comma-separated list. `--vectors` is a
VectorSet directory (one model only); without it the vectors are extracted first
(`config.probes.method`).

Per model: the evaluation prompts (kinds x emotional cues) run unsteered; the labels are the
model's own failures on them (`emojax.readouts.behaviour_labels` of its greedy responses);
the features are last-prompt-token projections on the control and emotion directions, the
policy logit (refusal score) and the top residual principal components. Every probe (feature
set x layer x fold x l2 x resample) is fitted in one program (`emojax.probes`).

Writes to `<workdir>/<model>/`: `probes.csv` (one row per layer), `probes.json`,
`delta_mon.png` and, with `config.probes.shift_reference`, `shift.csv` (mean activation shift
along each direction relative to the reference model); to `<workdir>/`: `summary.md`,
`summary.csv` (headline Δ_mon per model), `config.json` (provenance) and, first, `run.json`
(config and flags, their fingerprint). Every file is written atomically. A different config or
--model/--vectors into a non-empty workdir is refused before anything is written, unless
--overwrite (the old outputs then move into <workdir>/previous-<timestamp>/).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from emojax import pipeline, probes, results, sharding
from emojax.loading import validate_checkpoint
from emojax.report import write_csv
from emojax.workdir import run_main, script_config, start_on_writer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/zoo.py", lock_config=True)
_MODEL = flags.DEFINE_string("model", "instruct", "zoo name, checkpoint dir, 'zoo', or a list.")
_VECTORS = flags.DEFINE_string("vectors", "", "VectorSet directory ('' = extract now).")
_WORKDIR = flags.DEFINE_string("workdir", "", "output directory ('' = runs/probes-<time>).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move another run's outputs in --workdir into previous-<time>/ first."
)


def resolve_models(spec: str, cfg) -> dict[str, str]:
    """`{name: checkpoint dir}`; zoo names build (or reuse) the zoo."""
    from emojax.zoo import resolve_models as resolve

    try:
        return resolve(spec, cfg)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def load_vectors(path: str, model, cfg):
    """The VectorSet at `path`, or extracted now with the config's extract settings."""
    from emojax.extract import load_or_extract_vectors

    return load_or_extract_vectors(path, model, cfg, cfg.probes.method)


def eval_prompts(tokenizer, cfg):
    """Tokenised evaluation prompts (kinds x cues) as `emojax.sweep.SweepPrompts`."""
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


def plot_layers(path: str, rows: list[dict], set_names, title: str, headline: int) -> None:
    """Δ_mon per layer with its 95 % band (left) and out-of-fold AUROC per feature set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.array([r["layer"] for r in rows])
    get = lambda k: np.array([r[k] for r in rows], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.fill_between(layers, get("delta_mon_lo"), get("delta_mon_hi"), alpha=0.3, label="95% CI")
    ax.plot(layers, get("delta_mon"), marker="o", label="Δ_mon")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(headline, color="0.6", ls="--", lw=0.8)
    ax.set(xlabel="layer (resid site)", ylabel="AUROC(controls+emotion) − AUROC(controls)")
    ax.set_title(f"{title}: Δ_mon")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name in set_names:
        ax.fill_between(layers, get(f"auroc_lo[{name}]"), get(f"auroc_hi[{name}]"), alpha=0.15)
        ax.plot(layers, get(f"auroc[{name}]"), marker="o", label=name)
    ax.set(xlabel="layer (resid site)", ylabel="out-of-fold AUROC", title=f"{title}: AUROC")
    for ax in axes:
        ax.set_xticks(layers)
    ax.legend(fontsize=7)
    fig.tight_layout()
    results.save_figure(fig, path, dpi=110)
    plt.close(fig)


def monitor_kwargs(cfg) -> dict:
    p = cfg.probes
    return {
        "seed": p.seed,
        "l2_grid": tuple(p.l2_grid),
        "num_folds": p.num_folds,
        "num_bootstrap": p.num_bootstrap,
        "fpr": p.fpr,
        "num_steps": p.num_steps,
    }


def run_model(name: str, path: str, cfg, workdir: str, reference: dict | None, given) -> dict:
    """Probes of one model into `<workdir>/<name>/`; `given` is the --vectors set (None:
    extracted for this model)."""
    p, out = cfg.probes, os.path.join(workdir, name)
    os.makedirs(out, exist_ok=True)
    model = pipeline.load_point_model(path, cfg)
    vectors = given if given is not None else load_vectors("", model, cfg)
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
        shift = probes.finetune_shift(
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
    fs = probes.build_feature_sets(
        run["acts"], directions, run["policy_logit"], controls=controls, emotions=emotions,
        residual_dims=p.residual_dims,
    )  # fmt: skip
    t0 = time.perf_counter()
    # Refits only where Δ_mon needs them; the residual upper bound is fitted once.
    main = probes.monitor(
        fs.subset(("controls", "controls+emotion")),
        labels,
        num_refit_bootstrap=p.num_refit_bootstrap,
        **monitor_kwargs(cfg),
    )
    rows = main.layer_rows()
    set_names = list(main.set_names)
    if "residual" in fs.names:
        upper = probes.monitor(fs.subset(("residual",)), labels, **monitor_kwargs(cfg))
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
    plot_layers(os.path.join(out, "delta_mon.png"), rows, set_names, name, headline)
    logging.info("%s: Δ_mon %.3f [%.3f, %.3f] at layer %d (%.1f s of probes)", name,
                 summary["delta_mon"], summary["delta_mon_lo"], summary["delta_mon_hi"],
                 headline, seconds["probes"])  # fmt: skip
    return {**summary, "_acts": run["acts"]}


def summary_markdown(rows: list[dict]) -> str:
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


def main(argv):
    del argv
    cfg = _CONFIG.value
    sharding.maybe_initialize_distributed(cfg.mesh.distributed)  # before any device use
    workdir = _WORKDIR.value or os.path.join("runs", time.strftime("probes-%Y%m%d-%H%M%S"))
    run_cfg = script_config(cfg, "probes", model=_MODEL.value, vectors=_VECTORS.value)
    state = pipeline.claim_workdir(run_cfg, workdir, overwrite=_OVERWRITE.value)  # no writes
    models = resolve_models(_MODEL.value, cfg)
    if _VECTORS.value and len(models) > 1:
        raise app.UsageError("--vectors serves one model; drop it to extract per model")
    reference = None
    ref_spec = cfg.probes.shift_reference
    if ref_spec:
        ref_name = os.path.basename(os.path.normpath(ref_spec))
        if ref_name not in models:  # the reference runs first, without its own probes table
            models = {**resolve_models(ref_spec, cfg), **models}
        else:
            models = {ref_name: models[ref_name], **models}
    for path in models.values():  # config.json and weight headers, before anything is written
        validate_checkpoint(path)
    given = load_vectors(_VECTORS.value, None, cfg) if _VECTORS.value else None
    start_on_writer(state)  # the first write: run.json (old outputs moved aside if --overwrite)
    results.write_json(
        os.path.join(workdir, "config.json"),
        results.provenance(seed=cfg.seed, models=models, config=cfg),
    )
    rows = []
    for name, path in models.items():
        row = run_model(name, path, cfg, workdir, reference, given)
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
    print(text)


if __name__ == "__main__":
    run_main(main)
