"""Llama 3.1 8B family: base -> instruct, and the weight dial between them.

Checkpoints are read from local directories or the local Hugging Face cache (emojax never
downloads). Override paths with --config.breakpoint.models, e.g. to add a safety-hardened
derivative as a third axis point.

Memory: ~40 GB (bf16 weights 16 GB + KV cache and activations) on one accelerator.

Examples:
  python scripts/breakpoint.py --config=configs/llama31_8b.py --workdir=runs/llama31_8b
  python scripts/breakpoint.py --config=configs/llama31_8b.py:dial --workdir=runs/llama31_8b_dial
  python scripts/breakpoint.py --config=configs/llama31_8b.py:smoke --workdir=/tmp/llama31_8b_smoke
  python scripts/breakpoint.py --config=configs/llama31_8b.py \
      --config.breakpoint.models='("/ckpt/base","/ckpt/instruct","/ckpt/safety")' \
      --config.breakpoint.labels='("base","instruct","safety")'
"""

import os
import runpy

_family = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_family.py"))


def get_config(arg: str = ""):
    """arg: "" (model list axis), "dial" (weight-dial axis), "smoke" (tiny); comma-joined."""
    return _family["family_config"](
        name="Llama 3.1 8B",
        models=["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"],
        labels=["base", "instruct"],
        dial=("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"),
        arg=arg,
    )
