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

from absl import flags

from emojax import sharding
from emojax.probes.run import run
from emojax.workdir import define_config_file, run_main

# configs/ sits beside scripts/: the default is found from any working directory.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = define_config_file(
    "config",
    os.path.join(_REPO, "configs", "zoo.py"),
    "Config file (ml_collections), e.g. configs/zoo.py:smoke or configs/smollm2.py.",
)
_MODEL = flags.DEFINE_string("model", "instruct", "zoo name, checkpoint dir, 'zoo', or a list.")
_VECTORS = flags.DEFINE_string("vectors", "", "VectorSet directory ('' = extract now).")
_WORKDIR = flags.DEFINE_string("workdir", "", "output directory ('' = runs/probes-<time>).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move another run's outputs in --workdir into previous-<time>/ first."
)


def main(argv):
    del argv
    cfg = _CONFIG.value
    sharding.maybe_initialize_distributed(cfg.mesh.distributed)  # before any device use
    workdir = _WORKDIR.value or os.path.join("runs", time.strftime("probes-%Y%m%d-%H%M%S"))
    print(run(cfg, workdir, _MODEL.value, vectors=_VECTORS.value, overwrite=_OVERWRITE.value))


if __name__ == "__main__":
    run_main(main)
