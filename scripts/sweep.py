r"""Steering sweep of one model: dose-response, modularity, random null, Δ_steer.

Examples:
  python scripts/sweep.py --config=configs/zoo.py --model=instruct --workdir=/tmp/sweep
  python scripts/sweep.py --config=configs/zoo.py:smoke --model=/path/to/hf_dir \
      --vectors=/tmp/extract/instruct/vectors/diff_of_means --workdir=/tmp/sweep
  python scripts/sweep.py --config=configs/zoo.py --model=safety-2 --workdir=/tmp/s \
      --config.sweep.coefs="(-2.,-1.,0.,1.,2.)" --config.sweep.num_random=32

`--model` is a zoo name (base, instruct, safety-1..3; built or reused from the cache) or a
checkpoint directory. `--vectors` is a VectorSet directory (from scripts/extract_vectors.py);
without it the vectors are extracted first (`config.sweep.method`). Rerunning the same config
and flags into the same workdir resumes an interrupted sweep (completed chunks are kept); a
different config or --model/--vectors is refused before anything is written, unless
--overwrite (the old outputs then move into <workdir>/previous-<timestamp>/).

Writes to the workdir, each file atomically: `run.json` (first: config and flags, their
fingerprint), `config.json` (resolved config + provenance), `readouts.npz` (per-prompt
readouts), `sweep_meta.json`, `summary.json`, `steerability.csv`, `cross_steering.csv`,
`dose_response.png`, `cross_steering.png`, `report.md`.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from emojax import pipeline, results, sharding, sweep
from emojax.report import write_csv
from emojax.workdir import run_main, script_config, start_on_writer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/zoo.py", lock_config=True)
_MODEL = flags.DEFINE_string("model", "instruct", "zoo name or checkpoint directory.")
_VECTORS = flags.DEFINE_string("vectors", "", "VectorSet directory ('' = extract now).")
_WORKDIR = flags.DEFINE_string("workdir", "", "output directory ('' = runs/sweep-<time>).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move another run's outputs in --workdir into previous-<time>/ first."
)


def resolve_model(spec: str, cfg) -> str:
    """A checkpoint directory for a zoo name or a path."""
    if os.path.isdir(spec):
        return spec
    from emojax.zoo import ZOO_MODELS, build_zoo

    if spec not in ZOO_MODELS:
        raise app.UsageError(f"--model={spec!r} is neither a directory nor one of {ZOO_MODELS}")
    return build_zoo(cfg)[spec]


def load_vectors(path: str, model, cfg):
    """The VectorSet at `path`, or extracted now with the config's extract settings."""
    from emojax.extract import load_or_extract_vectors

    return load_or_extract_vectors(path, model, cfg, cfg.sweep.method)


def sweep_settings(cfg) -> dict:
    """The `sweep` section minus the keys that are not `run_sweep` settings."""
    keys = set(sweep.default_config())
    return {k: v for k, v in cfg.sweep.to_dict().items() if k in keys}


def prompts_for(model, cfg) -> sweep.SweepPrompts:
    s = cfg.sweep
    return sweep.SweepPrompts.from_concepts(
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


def write_tables(res: sweep.SweepResults, workdir: str) -> None:
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


def plot(res: sweep.SweepResults, workdir: str, title: str) -> None:
    """dose_response.png (refusal score and failure rate vs coefficient, random band) and
    cross_steering.png (M per layer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, meta = res.arrays, res.meta
    coefs, names, k = np.asarray(meta["coefs"]), meta["vector_names"], meta["num_named"]
    layers = meta["layers"]
    fig, axes = plt.subplots(len(layers), 2, figsize=(11, 4 * len(layers)), squeeze=False)
    for li, layer in enumerate(layers):
        fail = np.fmax(a["grid_harmful_compliance"][li], a["grid_over_refusal"][li])
        for ax, y, label in (
            (axes[li, 0], a["grid_refusal_score"][li], "refusal score (log-odds)"),
            (axes[li, 1], fail, "failure rate (harmful compliance or over-refusal)"),
        ):
            mean = np.nanmean(y, axis=-1)  # [I, K]
            if len(names) > k and not np.isnan(mean[k:]).all():
                lo, hi = np.nanpercentile(mean[k:], [5, 95], axis=0)
                ax.fill_between(coefs, lo, hi, color="0.85", label="random 5-95 %")
            for i in range(k):
                ax.plot(coefs, mean[i], marker="o", label=names[i])
            ax.set_xlabel("coefficient (x median residual norm)")
            ax.set_ylabel(label)
            ax.set_title(f"{title}: layer {layer}")
        axes[li, 0].legend(fontsize=7)
    fig.tight_layout()
    results.save_figure(fig, os.path.join(workdir, "dose_response.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 4.5), squeeze=False)
    for li, layer in enumerate(layers):
        cs = res.summary[str(layer)]["cross_steering"]
        m = np.asarray(cs["matrix"])
        ax = axes[0, li]
        lim = max(np.abs(m).max(), 1e-9)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(cs["cols"])), cs["cols"], rotation=45, ha="right")
        ax.set_yticks(range(len(cs["rows"])), cs["rows"])
        ax.set_xlabel("readout concept j")
        ax.set_ylabel("steering vector i")
        ax.set_title(f"{title}: M[i, j], layer {layer}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    results.save_figure(fig, os.path.join(workdir, "cross_steering.png"), dpi=110)
    plt.close(fig)


def _style_cell(entry) -> str:
    """Style/safety ratio per failure type, or 'not defined' (safety interval covers 0)."""
    if not entry:
        return "–"
    cells = [f"{t}: {r:.2f}" for t, r in entry["ratio"].items() if r is not None]
    return ", ".join(cells) if cells else "not defined"


def report(res: sweep.SweepResults, title: str) -> str:
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


def main(argv):
    del argv
    cfg = _CONFIG.value
    sharding.maybe_initialize_distributed(cfg.mesh.distributed)  # before any device use
    workdir = _WORKDIR.value or os.path.join("runs", time.strftime("sweep-%Y%m%d-%H%M%S"))
    run_cfg = script_config(cfg, "sweep", model=_MODEL.value, vectors=_VECTORS.value)
    state = pipeline.claim_workdir(run_cfg, workdir, overwrite=_OVERWRITE.value)  # no writes

    path = resolve_model(_MODEL.value, cfg)
    model = pipeline.load_point_model(path, cfg)
    vectors = load_vectors(_VECTORS.value, model, cfg)
    prompts = prompts_for(model, cfg)
    start_on_writer(state)  # the first write: run.json (old outputs moved aside if --overwrite)
    results.write_json(
        os.path.join(workdir, "config.json"),
        results.provenance(seed=cfg.seed, models={_MODEL.value: path}, config=cfg),
    )
    t0 = time.perf_counter()
    res = sweep.run_sweep(
        model, vectors, prompts, sweep_settings(cfg), workdir, progress=Progress()
    )
    logging.info("sweep of %s took %.1f s", _MODEL.value, time.perf_counter() - t0)
    title = os.path.basename(os.path.normpath(_MODEL.value))
    write_tables(res, workdir)
    plot(res, workdir, title)
    results.write_text(os.path.join(workdir, "report.md"), report(res, title) + "\n")
    print(report(res, title))


if __name__ == "__main__":
    run_main(main)
