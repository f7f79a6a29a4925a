"""Qwen2.5 7B family: base -> instruct, and the weight dial between them.

Checkpoints are read from local directories or the local Hugging Face cache (emojax never
downloads). Override paths with --config.breakpoint.models, e.g. to add a safety-hardened
derivative as a third axis point.

Memory: ~38 GB (bf16 weights 15 GB + KV cache and activations) on one accelerator.

Examples:
  python scripts/breakpoint.py --config=configs/qwen25_7b.py --workdir=runs/qwen25_7b
  python scripts/breakpoint.py --config=configs/qwen25_7b.py:dial --workdir=runs/qwen25_7b_dial
  python scripts/breakpoint.py --config=configs/qwen25_7b.py:smoke --workdir=/tmp/qwen25_7b_smoke
  python scripts/breakpoint.py --config=configs/qwen25_7b.py \
      --config.breakpoint.models='("/ckpt/base","/ckpt/instruct","/ckpt/safety")' \
      --config.breakpoint.labels='("base","instruct","safety")'
"""

import os
import runpy

_family = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_family.py"))


def get_config(arg: str = ""):
    """arg: "" (model list axis), "dial" (weight-dial axis), "smoke" (tiny); comma-joined."""
    return _family["family_config"](
        name="Qwen2.5 7B",
        models=["Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"],
        labels=["base", "instruct"],
        dial=("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"),
        arg=arg,
    )
