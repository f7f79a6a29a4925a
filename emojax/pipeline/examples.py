"""Example generations for the report: failing requests, unsteered and best-steered.

Dimension legend: A sweep layers, P joint grids, K' joint coefficients, N steered prompts,
W generated tokens.
"""

from __future__ import annotations

import numpy as np

from emojax import readouts as ro
from emojax import sweep
from emojax.pipeline.evalset import FAILURE_TYPES, EvalSet


def chosen_cell(choices: np.ndarray) -> int:
    """The cell of an arm chosen most often over the cross-fitting folds and splits."""
    values, counts = np.unique(np.asarray(choices).ravel(), return_counts=True)
    return int(values[np.argmax(counts)])


def example_generations(
    res: sweep.SweepResults, evalset: EvalSet, cells: dict[str, int | None], tokenizer,
    *, per_type: int = 3, layer_pos: int = 0,
) -> dict[str, list[dict]]:  # fmt: skip
    """Up to `per_type` failing prompts per failure type: the unsteered response and the
    response at the emotion arm's most-chosen cell (`cells[type]`, None: not estimable).

    Args:
      res: the sweep of the steered prompts (`evalset`'s prompts, in order).
      evalset: the steered prompts.
      cells: failure type -> emotion-arm cell index (grid x K'² + a x K' + b) or None.
      tokenizer: decodes the generated ids.
      per_type: examples per failure type.
      layer_pos: the sweep layer.

    Returns:
      failure type -> [{"prompt", "unsteered", "steered", "steering"}] ("steered" None
      where no cell was chosen).
    """
    arr, meta = res.arrays, res.meta
    eos = tuple(meta.get("eos", ())) or (tokenizer.eos_token_id,)
    kj = len(meta["joint_coefs"])
    emotion_grids = [p for p, a in enumerate(meta["joint_arms"]) if a == "emotion"]
    out = {}
    for t in FAILURE_TYPES:
        failing = np.flatnonzero(np.asarray(arr[f"base_{t}"]) > 0.5)[:per_type]
        base = ro.decode_responses(tokenizer, np.asarray(arr["base_tokens"])[failing], eos)
        cell, steered, how = cells.get(t), [None] * len(failing), None
        if cell is not None and emotion_grids and "joint_tokens" in arr:
            grid, rest = divmod(cell, kj * kj)
            a, b = divmod(rest, kj)
            p = emotion_grids[grid]
            ids = np.asarray(arr["joint_tokens"])[layer_pos, p, a, b][failing]
            steered = ro.decode_responses(tokenizer, ids, eos)
            first, second = meta["joint_pairs"][p]
            c = meta["joint_coefs"]
            how = f"{first} {c[a]:+g}, {second} {c[b]:+g} (median-norm units)"
        out[t] = [{"prompt": evalset.items[i].text, "unsteered": u, "steered": s, "steering": how}
                  for i, u, s in zip(failing, base, steered, strict=True)]  # fmt: skip
    return out
