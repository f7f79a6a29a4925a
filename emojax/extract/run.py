"""The `scripts/extract_vectors.py` run: every model's concept vectors and their stability.

`run` claims the work directory, resolves and checks every model before anything is written,
then per model extracts all concepts x layers x methods (`extract_model`), saves the vectors
and writes the stability metrics; with several models it adds the cross-model comparison, and
always `summary.md`. This module sits above `emojax.pipeline` (it loads models with
`load_point_model`), so `emojax.extract` does not import it.

Per model, the workdir gets `<model>/vectors/<method>/` (orbax) and
`<model>/vectors/<method>.safetensors` + `.json` (PyTorch), `<model>/stability.csv`,
`<model>/control_cosine.csv`, `<model>/stability.json`, `<model>/stability.png`,
`<model>/capture.json`; with several models also `cross_model.csv`; always `summary.md`,
`config.json` (provenance) and, first, `run.json` (config and flags, their fingerprint).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, logging

from emojax import pipeline, plots, results
from emojax.config import ModelConfig
from emojax.extract.extraction import Extraction, config_kwargs, extract_model
from emojax.loading import validate_checkpoint
from emojax.metrics import stability
from emojax.params import count_params, init_params
from emojax.report import write_csv
from emojax.vectors import save_all
from emojax.workdir import claim_workdir, script_config, start_on_writer


def resolve_models(spec: str, cfg) -> dict[str, str]:
    """`{name: checkpoint}` of a `--model` spec: zoo names build (or reuse) the zoo, a `.gguf`
    file is taken as is (named by its stem), registered names (`emojax.models`, e.g.
    smollm2-135m-instruct) are fetched once and cached; "zoo" means every zoo model.

    Raises:
      absl.app.UsageError: a name that is none of these (`emojax.zoo.resolve_models`).
    """
    from emojax import models as registry
    from emojax.zoo import resolve_models as resolve_zoo_models

    names, direct = [s for s in spec.split(",") if s], {}
    for n in names:
        if n.endswith(".gguf") and os.path.isfile(n):
            direct[os.path.basename(n).removesuffix(".gguf")] = n
        elif registry.is_registered(n) and not os.path.exists(n):
            direct[n] = registry.ensure_model(n)
    rest = [n for n in names if n not in direct and not n.endswith(".gguf")]
    try:
        zoo = resolve_zoo_models(",".join(rest), cfg) if rest else {}
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    return {**zoo, **direct}


def extract_one_model(
    name: str, path: str, cfg, workdir: str, rng, *, random_model: str = "", repeats: int = 1
) -> tuple[Extraction, dict]:
    """Extracts one model's vectors into `<workdir>/<name>/` with their stability metrics.

    Args:
      name: the model's name (its folder in the workdir).
      path: its checkpoint.
      cfg: the run config (`data`, `extract`, `seed`, `dtype`, `mesh`).
      workdir: the output directory.
      rng: PRNG key of the stability resamples.
      random_model: JSON of config.json overrides: random weights of that shape with the
        tokenizer and template of `path` (timing); '' = the checkpoint's weights.
      repeats: extractions per model (later ones warm); the last one is saved.

    Returns:
      `(Extraction, stability report)` of the last extraction.
    """
    e, d = cfg.extract, cfg.data
    model = pipeline.load_point_model(path, cfg)
    params, config = model.params, model.config
    if random_model:  # the tokenizer and template of `path`, random weights of another shape
        config = ModelConfig.from_hf_dict({**config.to_hf_dict(), **json.loads(random_model)})
        params = init_params(config, jax.random.key(cfg.seed, impl="rbg"), getattr(jnp, cfg.dtype))
    meta = {"model": name, "model_path": os.path.abspath(path),
            "model_sha256": results.model_hash(path), "random_model": random_model}  # fmt: skip
    extract_once = lambda: extract_model(
        params, config, model.tokenizer, **config_kwargs(cfg), metadata=meta
    )
    timings = []
    for _ in range(max(repeats, 1)):
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
    plots.plot_stability(os.path.join(out, "stability.png"), report, name)
    logging.info("%s: %d prompts, runs %s", name, s.num_prompts, timings)
    return ex, report


def cross_model_rows(runs: dict, rng, num: int) -> list[dict]:
    """Every model pair on the same prompts: cosine at matched sites and projection correlation.

    Args:
      runs: `{name: (Extraction, report)}` of `extract_one_model`.
      rng: PRNG key of the bootstrap.
      num: bootstrap resamples.
    """
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


def run(
    cfg,
    workdir: str,
    model: str,
    *,
    random_model: str = "",
    repeats: int = 1,
    overwrite: bool = False,
) -> str:
    """Extracts every model of `model` into `workdir` (the layout in the module docstring).

    Nothing is written before the work directory is claimed (`emojax.workdir`: a different
    config or flags into a non-empty workdir is refused unless `overwrite`, which moves the
    old outputs into `<workdir>/previous-<timestamp>/`), `random_model` parses and every
    checkpoint's config.json and weight headers are valid. Every file is written atomically.

    Args:
      cfg: the run config (e.g. configs/zoo.py).
      workdir: the output directory.
      model: a `--model` spec (`resolve_models`): zoo names, checkpoint directories, .gguf
        files, registered names, "zoo", or a comma-separated list.
      random_model: JSON of config.json overrides for random weights (see
        `extract_one_model`).
      repeats: extractions per model.
      overwrite: use a workdir holding another run's outputs (moved aside first).

    Returns:
      The summary markdown (also written to `<workdir>/summary.md`).

    Raises:
      absl.app.UsageError: `random_model` is not JSON, or `model` names nothing.
    """
    run_cfg = script_config(cfg, "extract_vectors", model=model,
                            random_model=random_model, repeats=repeats)  # fmt: skip
    state = claim_workdir(run_cfg, workdir, overwrite=overwrite)  # no writes
    if random_model:
        try:
            json.loads(random_model)
        except ValueError as e:
            raise app.UsageError(f"--random_model is not a JSON object: {e}") from None
    models = resolve_models(model, cfg)
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
        runs[name] = extract_one_model(
            name, path, cfg, workdir, key, random_model=random_model, repeats=repeats
        )
    if len(runs) > 1:
        write_csv(os.path.join(workdir, "cross_model.csv"),
                  cross_model_rows(runs, rng, cfg.extract.resamples))  # fmt: skip
    text = summary_markdown(runs)
    results.write_text(os.path.join(workdir, "summary.md"), text)
    return text
