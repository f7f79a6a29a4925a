"""Gemma 2 2B family: base -> instruct, and the weight dial between them.

Checkpoints are read from local directories or the local Hugging Face cache (emojax never
downloads). Override paths with --config.breakpoint.models, e.g. to add a safety-hardened
derivative as a third axis point.

Memory: ~18 GB (bf16 weights 5.2 GB + activations) on one accelerator.

Examples:
  python scripts/breakpoint.py --config=configs/gemma2_2b.py --workdir=runs/gemma2_2b
  python scripts/breakpoint.py --config=configs/gemma2_2b.py:dial --workdir=runs/gemma2_2b_dial
  python scripts/breakpoint.py --config=configs/gemma2_2b.py:smoke --workdir=/tmp/gemma2_2b_smoke
  python scripts/breakpoint.py --config=configs/gemma2_2b.py \
      --config.breakpoint.models='("/ckpt/base","/ckpt/instruct","/ckpt/safety")' \
      --config.breakpoint.labels='("base","instruct","safety")'
"""

import os
import runpy

_family = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_family.py"))


def get_config(arg: str = ""):
    """arg: "" (model list axis), "dial" (weight-dial axis), "smoke" (tiny); comma-joined."""
    return _family["family_config"](
        name="Gemma 2 2B",
        models=["google/gemma-2-2b", "google/gemma-2-2b-it"],
        labels=["base", "instruct"],
        dial=("google/gemma-2-2b", "google/gemma-2-2b-it"),
        arg=arg,
    )
