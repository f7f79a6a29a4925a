"""One model's steering sweep as a run of its own (scripts/sweep.py): claim the work directory,
resolve and load the model, load or extract the vectors, run the sweep, write its tables, plots
and report.

It loads the model as the break-point job does (`emojax.pipeline.load_point_model`), so it
sits above the pipeline: `emojax.sweep` does not import it.

Writes to the work directory, each file atomically: `run.json` (first: config and flags, their
fingerprint), `config.json` (resolved config + provenance), `readouts.npz` (per-prompt
readouts), `sweep_meta.json`, `summary.json`, `steerability.csv`, `cross_steering.csv`,
`dose_response.png`, `cross_steering.png`, `report.md`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from absl import logging

from emojax import plots, results
from emojax.pipeline import load_point_model
from emojax.report import write_csv
from emojax.sweep.assemble import SweepResults
from emojax.sweep.conditions import default_config
from emojax.sweep.prompts import SweepPrompts
from emojax.sweep.run import run_sweep
from emojax.workdir import claim_workdir, script_config, start_on_writer


def resolve_model(spec: str, cfg: Any) -> str:
    """A checkpoint directory for a zoo name (built or reused from the cache) or a directory.

    Raises:
      absl.app.UsageError: `spec` is neither a directory nor one zoo model.
    """
    from absl import app

    from emojax.zoo import resolve_models

    if os.path.isdir(spec):
        return spec
    if spec == "zoo":  # resolve_models' name for every zoo model; a sweep runs one
        raise app.UsageError("--model=zoo names every zoo model; the sweep runs one")
    try:
        (path,) = resolve_models([spec], cfg).values()
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    return path


def load_vectors(path: str, model: Any, cfg: Any) -> Any:
    """The VectorSet at `path`, or extracted now with the config's extract settings."""
    from emojax.extract import load_or_extract_vectors

    return load_or_extract_vectors(path, model, cfg, cfg.sweep.method)


def sweep_settings(cfg: Any) -> dict:
    """The `sweep` section minus the keys that are not `run_sweep` settings."""
    keys = set(default_config())
    return {k: v for k, v in cfg.sweep.to_dict().items() if k in keys}


def prompts_for(model: Any, cfg: Any) -> SweepPrompts:
    """The config's evaluation and neutral prompts (`data` and `sweep` sections), tokenised."""
    s = cfg.sweep
    return SweepPrompts.from_concepts(
        model.tokenizer,
        num_per_kind=dict(s.prompts_per_kind),
        num_neutral=s.neutral_prompts,
        split=cfg.data.eval_split,
        data_dir=cfg.data.dir or None,
        rendering=cfg.data.get("rendering", "zoo"),
    )


class Progress:
    """A one-line progress report: conditions done, conditions/s, ETA."""

    def __init__(self, every_s: float = 2.0):
        self.every_s, self.last = every_s, 0.0

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        if elapsed - self.last < self.every_s and done < total:
            return
        self.last = elapsed
        rate = done / max(elapsed, 1e-9)
        eta = (total - done) / max(rate, 1e-9)
        end = "\n" if done >= total else ""
        sys.stderr.write(
            f"\rsweep: {done}/{total} conditions, {rate:.1f} conditions/s, ETA {eta:.0f} s  {end}"
        )
        sys.stderr.flush()


def write_tables(res: SweepResults, workdir: str) -> None:
    """`steerability.csv` (a row per layer, vector, readout) and `cross_steering.csv` (a row per
    layer and vector: M, selectivity, off-target KL, style/safety)."""
    rows, cross = [], []
    for layer, s in res.summary.items():
        for vec, per in s["steerability"].items():
            for readout, e in per.items():
                rows.append(
                    {
                        "layer": layer,
                        "vector": vec,
                        "readout": readout,
                        "slope": e["slope"],
                        "ci_lo": e["ci"][0],
                        "ci_hi": e["ci"][1],
                        "slope_std": e["slope_std"],
                        "anti_steerable_fraction": e["anti_steerable_fraction"],
                        "null_z": e.get("null_z", float("nan")),
                        "null_p": e.get("null_p", float("nan")),
                    }
                )
        cs = s["cross_steering"]
        for i, vec in enumerate(cs["rows"]):
            row = {"layer": layer, "vector": vec}
            row.update({f"M_{c}": cs["matrix"][i][j] for j, c in enumerate(cs["cols"])})
            row["selectivity"] = cs["selectivity"][i]
            row["offtarget_kl_per_unit_effect"] = cs["offtarget_kl_per_unit_effect"][i]
            row["style_vs_safety"] = s["style_vs_safety"].get(vec, float("nan"))
            cross.append(row)
    for name, table in (("steerability.csv", rows), ("cross_steering.csv", cross)):
        if table:
            write_csv(os.path.join(workdir, name), table)


def _style_cell(entry) -> str:
    """Style/safety ratio per failure type, or 'not defined' (safety interval covers 0)."""
    if not entry:
        return "–"
    cells = [f"{t}: {r:.2f}" for t, r in entry["ratio"].items() if r is not None]
    return ", ".join(cells) if cells else "not defined"


def sweep_report(res: SweepResults, title: str) -> str:
    """The markdown report: per layer a row per named vector and the Δ_steer lines."""
    lines = [f"# Steering sweep: {title}", ""]
    for layer, s in res.summary.items():
        lines += [
            f"## layer {layer}",
            "",
            "| vector | refusal slope [95% CI] | z vs random | "
            "failure slope | anti-steerable | selectivity | style/safety |",
            "|---|---|---|---|---|---|---|",
        ]
        cs = s["cross_steering"]
        for i, vec in enumerate(cs["rows"]):
            r = s["steerability"][vec].get("refusal_score", {})
            f = s["steerability"][vec].get("failure", {})
            ci = r.get("ci", [float("nan")] * 2)
            lines.append(
                f"| {vec} | {r.get('slope', float('nan')):+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] | "
                f"{r.get('null_z', float('nan')):+.1f} | {f.get('slope', float('nan')):+.3f} | "
                f"{r.get('anti_steerable_fraction', float('nan')):.2f} | "
                f"{cs['selectivity'][i]:.2f} | "
                f"{_style_cell(s['style_vs_safety'].get(vec))} |"
            )
        for ftype, per in s["delta_steer"].items():
            for kappa, d in per.items():
                lines.append(
                    f"- Δ_steer({ftype}, κ={kappa}) = {d['estimate']:+.3f} "
                    f"[{d['lo']:+.3f}, {d['hi']:+.3f}], random-direction null p = "
                    f"{d.get('null_p', float('nan')):.2f}"
                )
        lines.append("")
    return "\n".join(lines)


def sweep_model(
    cfg: Any,
    model: str,
    workdir: str = "",
    *,
    vectors: str = "",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[SweepResults, str]:
    """Sweeps one model into a work directory: what scripts/sweep.py runs.

    Rerunning the same config, model and vectors into the same work directory resumes an
    interrupted sweep (completed chunks are kept); another config, model or vectors is refused
    before anything is written, unless `overwrite` (the old outputs then move into
    `<workdir>/previous-<timestamp>/`).

    Args:
      cfg: the config (configs/zoo.py and friends: `sweep`, `data`, `extract`, `mesh`, `seed`).
      model: a zoo name (built or reused from the cache) or a checkpoint directory.
      workdir: the output directory ('' = runs/sweep-<time>).
      vectors: a VectorSet directory ('' = extract now with `cfg.sweep.method`).
      overwrite: move another run's outputs in `workdir` aside first.
      progress: called after each chunk (`Progress` prints a line to stderr).

    Returns:
      The `SweepResults` and the markdown report (also written to `report.md`).
    """
    workdir = workdir or os.path.join("runs", time.strftime("sweep-%Y%m%d-%H%M%S"))
    run_cfg = script_config(cfg, "sweep", model=model, vectors=vectors)
    state = claim_workdir(run_cfg, workdir, overwrite=overwrite)  # no writes

    path = resolve_model(model, cfg)
    loaded = load_point_model(path, cfg)
    vector_set = load_vectors(vectors, loaded, cfg)
    prompts = prompts_for(loaded, cfg)
    start_on_writer(state)  # the first write: run.json (old outputs moved aside if overwrite)
    results.write_json(
        os.path.join(workdir, "config.json"),
        results.provenance(seed=cfg.seed, models={model: path}, config=cfg),
    )
    t0 = time.perf_counter()
    res = run_sweep(loaded, vector_set, prompts, sweep_settings(cfg), workdir, progress=progress)
    logging.info("sweep of %s took %.1f s", model, time.perf_counter() - t0)
    title = os.path.basename(os.path.normpath(model))
    write_tables(res, workdir)
    plots.plot_dose_response(
        res.arrays, res.meta, path=os.path.join(workdir, "dose_response.png"), title=title
    )
    plots.plot_cross_steering(
        res.summary, res.meta["layers"], path=os.path.join(workdir, "cross_steering.png"),
        title=title,
    )  # fmt: skip
    text = sweep_report(res, title)
    results.write_text(os.path.join(workdir, "report.md"), text + "\n")
    return res, text
