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
`dose_response.png`, `cross_steering.png`, `report.md` (`emojax.sweep.standalone`).
"""

from __future__ import annotations

import os

from absl import flags

from emojax import sharding
from emojax.sweep import standalone
from emojax.workdir import define_config_file, run_main

# configs/ sits beside scripts/: the default is found from any working directory.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = define_config_file(
    "config",
    os.path.join(_REPO, "configs", "zoo.py"),
    "Config file (ml_collections), e.g. configs/zoo.py:smoke or configs/smollm2.py.",
)
_MODEL = flags.DEFINE_string("model", "instruct", "zoo name or checkpoint directory.")
_VECTORS = flags.DEFINE_string("vectors", "", "VectorSet directory ('' = extract now).")
_WORKDIR = flags.DEFINE_string("workdir", "", "output directory ('' = runs/sweep-<time>).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move another run's outputs in --workdir into previous-<time>/ first."
)


def main(argv):
    del argv
    cfg = _CONFIG.value
    sharding.maybe_initialize_distributed(cfg.mesh.distributed)  # before any device use
    _, report = standalone.sweep_model(
        cfg, _MODEL.value, _WORKDIR.value, vectors=_VECTORS.value, overwrite=_OVERWRITE.value,
        progress=standalone.Progress(),
    )  # fmt: skip
    print(report)


if __name__ == "__main__":
    run_main(main)
