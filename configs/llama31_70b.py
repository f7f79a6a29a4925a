"""Llama 3.1 70B family: base -> instruct, and the weight dial between them.

Checkpoints are read from local directories or the local Hugging Face cache (emojax never
downloads). Override paths with --config.breakpoint.models, e.g. to add a safety-hardened
derivative as a third axis point.

Memory: 141 GB of bf16 weights: shard on a (data, model) mesh, e.g. mesh.model = 8
(16.4 GiB of weights per chip on a v5p-64 (4, 8) mesh); see tpu/README.md.

Examples:
  python scripts/breakpoint.py --config=configs/llama31_70b.py --workdir=runs/llama31_70b
  python scripts/breakpoint.py --config=configs/llama31_70b.py:dial --workdir=runs/llama31_70b_dial
  python scripts/breakpoint.py --config=configs/llama31_70b.py:smoke --workdir=/tmp/l70_smoke
  python scripts/breakpoint.py --config=configs/llama31_70b.py \
      --config.breakpoint.models='("/ckpt/base","/ckpt/instruct","/ckpt/safety")' \
      --config.breakpoint.labels='("base","instruct","safety")'
"""

import os
import runpy

_family = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_family.py"))


def get_config(arg: str = ""):
    """arg: "" (model list axis), "dial" (weight-dial axis), "smoke" (tiny); comma-joined."""
    c = _family["family_config"](
        name="Llama 3.1 70B",
        models=["meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct"],
        labels=["base", "instruct"],
        dial=("meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct"),
        arg=arg,
    )
    c.mesh.model = 8  # weights sharded over 8 chips (heads, MLP, vocabulary)
    return c
