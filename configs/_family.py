"""Shared builder for real-model-family configs (imported by configs/<family>.py).

A real family's axis is its checkpoints in order of policy dominance (base, instruct, ...)
or a weight dial between its base and tuned checkpoints. Every other section starts from
configs/zoo.py and is scaled up for real models.
"""

import os
import runpy
from collections.abc import Sequence

import ml_collections

VARIANTS = ("smoke", "dial")


def _zoo_config(arg: str) -> ml_collections.ConfigDict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo.py")
    return runpy.run_path(path)["get_config"](arg)


def family_config(
    *,
    name: str,
    models: Sequence[str],
    labels: Sequence[str],
    dial: tuple[str, str],
    arg: str,
) -> ml_collections.ConfigDict:
    """A real-family config.

    Args:
      name: family name used in reports.
      models: checkpoint directories or model ids in the local HF cache, in axis order.
      labels: axis labels of `models`.
      dial: (base, tuned) checkpoints of the weight dial.
      arg: comma-separated options: "smoke" (tiny run), "dial" (use the dial as the axis).

    Returns:
      The ConfigDict.

    Raises:
      ValueError: an option other than "smoke" and "dial".
    """
    opts = set(filter(None, arg.split(",")))
    unknown = sorted(opts - set(VARIANTS))
    if unknown:
        raise ValueError(
            f"unknown config variant(s) {', '.join(map(repr, unknown))} of {name}: valid are "
            f"'' (the model list), {', '.join(map(repr, VARIANTS))}, or both comma-joined"
        )
    smoke = "smoke" in opts
    c = _zoo_config("smoke" if smoke else "")
    c.dtype = "bfloat16"
    c.family = name
    # Real checkpoints are never built: the zoo section is unused.
    c.zoo.enabled = False
    c.extract.batch_size = 8 if smoke else 32
    c.extract.buckets = (64, 128, 256)
    c.extract.template_source = dial[1]  # the tuned model's chat template for every member
    c.sweep.layers = (0.5,) if smoke else (0.35, 0.5, 0.65)
    c.sweep.max_new_tokens = 8 if smoke else 24
    c.sweep.memory_mb = 2048 if smoke else 16384
    if not smoke:
        c.sweep.prompts_per_kind = ml_collections.ConfigDict(
            {"harmful": 128, "harmless": 64, "borderline": 64}
        )
        c.sweep.neutral_prompts = 64
    bp = c.breakpoint
    bp.axis = "dial" if "dial" in opts else "models"
    # Tuples: the flag parser reads --config.breakpoint.models='("a", "b")' into tuple fields.
    bp.models = tuple(models[:2]) if smoke else tuple(models)
    bp.labels = tuple(labels[:2]) if smoke else tuple(labels)
    bp.dial_base, bp.dial_tuned = dial
    bp.alphas = (0.0, 1.0) if smoke else (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
    return c
