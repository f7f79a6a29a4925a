"""Plans a run on a mesh: per-device memory (params, KV cache, activations) and sweep FLOPs.

Nothing is allocated: parameter layouts come from `jax.eval_shape` over the sharded
initialiser on a device-free `AbstractMesh`, and the planner's own byte count is checked
against it. Sweep sizes are read from the config's `sweep` section; the mesh from `mesh`.
The report is `emojax.run_plan.plan_config`.

Examples:
  python scripts/plan.py --config=configs/llama31_8b.py --devices=8 --chip=v5e
  python scripts/plan.py --config=configs/zoo.py --model=llama-3.1-70b --devices=32 \
      --mesh=4,8 --chip=v5p                                  # Llama-3.1-70B on a v5p-64
  python scripts/plan.py --config=configs/gemma2_2b.py --devices=4 --chip=v6e
  python scripts/plan.py --config=configs/smollm2.py --chip=h100   # a registered model, 1 GPU
"""

from __future__ import annotations

import os

from absl import flags

from emojax.parallel.plan import CHIP_SPECS
from emojax.run_plan import plan_config
from emojax.workdir import define_config_file, run_main

# configs/ sits beside scripts/: the default is found from any working directory.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = define_config_file(
    "config",
    os.path.join(_REPO, "configs", "zoo.py"),
    "Config file (ml_collections), e.g. configs/llama31_8b.py or configs/smollm2.py.",
)
_MODEL = flags.DEFINE_string(
    "model",
    "",
    "checkpoint dir, GGUF file, registered or known model name ('' = the "
    "config's breakpoint.models).",
)
_DEVICES = flags.DEFINE_integer("devices", 0, "chips in the mesh (0 = mesh.data*mesh.model).")
_MESH = flags.DEFINE_string("mesh", "", "'data,model' (overrides the config's mesh section).")
_CHIP = flags.DEFINE_enum("chip", "v5p", list(CHIP_SPECS), "TPU (v5e, v5p, v6e) or GPU (h100 "
                          "80 GB, h200 141 GB, a100 80 GB): memory and peak FLOP/s.")  # fmt: skip
_MFU = flags.DEFINE_float("mfu", 0.4, "assumed model-FLOPs utilisation for time estimates.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 256, "prompt tokens T (padded bucket).")
_BATCH = flags.DEFINE_integer("batch", 0, "sequences per forward call (0 = 8 per data shard).")
_PREFIX = flags.DEFINE_float("prefix_layer", -1, "one injection layer (int or depth "
                             "fraction; -1 = the config's sweep.layers).")  # fmt: skip


def main(argv):
    del argv
    reports = plan_config(
        _CONFIG.value, model=_MODEL.value, devices=_DEVICES.value, mesh=_MESH.value,
        chip=_CHIP.value, mfu=_MFU.value, seq_len=_SEQ_LEN.value, batch=_BATCH.value,
        prefix_layer=_PREFIX.value,
    )  # fmt: skip
    if not reports:
        raise SystemExit("nothing to plan: pass --model=<checkpoint dir or known model name>")
    for report in reports:
        print(report)


if __name__ == "__main__":
    run_main(main)
