"""A sweep's readouts: `SweepResults` (per-prompt readouts, metadata, summary; its files) and
its assembly from the per-chunk outputs into the condition grids.

Dimension legend: A sweep layers, I steering vectors (named, then random), I' named vectors,
K coefficients, K' joint coefficients, P joint pairs, N evaluation prompts, M neutral prompts,
J concept readouts, W generated tokens, C conditions, R generating conditions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from emojax import readouts as ro
from emojax import results as res
from emojax.metrics import modularity
from emojax.sweep.conditions import _arm_of

STYLE_KEYS = ("apology", "hedging", "warmth", "length")
BEHAVIOUR_KEYS = ("refused", "harmful_compliance", "over_refusal")


@dataclasses.dataclass
class SweepResults:
    """Per-prompt readouts of a sweep, the metadata to read them, and the summary metrics.

    `arrays` (all saved to `readouts.npz`):
      grid_<r> [A, I, K, N] for r in refusal_score, refused, harmful_compliance,
        over_refusal, apology, hedging, warmth, length (behaviour/style NaN where no
        generation ran); grid_projection [A, I, K, N, J] (in norm units of the readout
        layer); grid_kl, grid_nll_delta [A, I, K, M]; grid_tokens int32 [A, I, K, N, W]
        (-1 where no generation ran).
      joint_<r> [A, P, K', K', N or M ...]: the same readouts on the joint grid.
      base_<r> [N] unsteered readouts (refusal_score, behaviour, style, projection [N, J],
        tokens [N, W]); base_nll [M]; harmful bool [N]; vector_cosine [A, I', I'] cosines
        of the named steering directions at each sweep layer.
    `meta`: vector_names (named first, then random_XX), num_named, concepts (readout columns
      J), layers, coefs, joint_pairs, joint_coefs, kinds, readout_layer, config.
    `summary`: metrics (see `summarize`).
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, workdir: str) -> None:
        """Writes `readouts.npz`, `sweep_meta.json` and `summary.json` into `workdir`."""
        res.save_arrays(os.path.join(workdir, "readouts.npz"), self.arrays)
        res.write_json(os.path.join(workdir, "sweep_meta.json"), self.meta)
        res.write_json(os.path.join(workdir, "summary.json"), self.summary)

    @classmethod
    def load(cls, workdir: str) -> SweepResults:
        """A finished sweep's results from its work directory (summary empty if absent)."""
        with open(os.path.join(workdir, "sweep_meta.json")) as f:
            meta = json.load(f)
        summary = {}
        path = os.path.join(workdir, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                summary = json.load(f)
        return cls(res.load_arrays(os.path.join(workdir, "readouts.npz")), meta, summary)


def _assemble_flat(chunk_out, total, n, m, w, j) -> dict[str, np.ndarray]:
    flat = {
        "refusal_score": np.full((total, n), np.nan, np.float32),
        "projection": np.full((total, n, j), np.nan, np.float32),
        "kl": np.full((total, m), np.nan, np.float32),
        "nll_delta": np.full((total, m), np.nan, np.float32),
        "tokens": np.full((total, n, w), -1, np.int32),
    }
    for idx, out in chunk_out:
        for k, v in out.items():
            flat[k][idx] = v
    return flat


def _text_readouts(
    tokenizer, ids: np.ndarray, eos, harmful: np.ndarray, classify=ro.classify_response
) -> dict[str, np.ndarray]:
    """Behaviour and style readouts of generated ids [R, N, W] -> each [R, N] float.

    Steered responses repeat a lot (greedy decoding, small models), so each distinct
    response (cut at eos) is decoded and classified once.
    """
    r, n, w = ids.shape
    flat = ids.reshape(r * n, w).copy()
    is_eos = np.isin(flat, np.asarray(eos, flat.dtype)) if len(eos) else np.zeros_like(flat, bool)
    after = np.cumsum(is_eos, axis=1) > 0
    flat[after] = -1  # everything from the first eos on
    uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows = [[int(x) for x in row if x >= 0] for row in uniq]
    texts = list(tokenizer.batch_decode(rows, skip_special_tokens=True))
    refused = np.array([classify(t) for t in texts], bool)[inverse].reshape(r, n)
    harm = np.broadcast_to(np.asarray(harmful, bool), (r, n))
    out = {
        "refused": refused.astype(np.float32),
        "harmful_compliance": (harm & ~refused).astype(np.float32),
        "over_refusal": (~harm & refused).astype(np.float32),
    }
    sty = ro.style_rates(texts)
    out.update({k: sty[k][inverse].reshape(r, n) for k in STYLE_KEYS})
    return out


def _to_grids(
    flat,
    cond,
    prompts,
    tok,
    eos,
    layers,
    vecs,
    cfg,
    pairs,
    readout_layer,
    base_score,
    base_proj,
    base_nll,
    classify=ro.classify_response,
) -> SweepResults:
    n = prompts.num_prompts
    gen = cond.generate
    text = {k: np.full((len(gen), n), np.nan, np.float32) for k in BEHAVIOUR_KEYS + STYLE_KEYS}
    if gen.any():
        texts = _text_readouts(tok, flat["tokens"][gen], eos, prompts.harmful, classify)
        for k, v in texts.items():
            text[k][gen] = v
    per_cond = {**flat, **text}
    a, i, k = len(layers), len(vecs.names), len(cfg["coefs"])
    p, kj = len(pairs), len(cfg["joint_coefs"])
    arrays = {}
    g = cond.grid_index[:, 0] >= 0
    order_g = np.lexsort(tuple(cond.grid_index[g].T[::-1]))
    jn = cond.joint_index[:, 0] >= 0
    order_j = np.lexsort(tuple(cond.joint_index[jn].T[::-1]))
    for name, v in per_cond.items():
        arrays[f"grid_{name}"] = v[g][order_g].reshape(a, i, k, *v.shape[1:])
        if p:
            arrays[f"joint_{name}"] = v[jn][order_j].reshape(a, p, kj, kj, *v.shape[1:])
    base = int(np.nonzero(cond.is_base)[0][0])
    arrays.update({f"base_{k}": text[k][base] for k in BEHAVIOUR_KEYS + STYLE_KEYS})
    base_tokens = flat["tokens"][base]
    arrays["base_refusal_score"] = np.asarray(base_score)
    arrays["base_projection"] = base_proj
    arrays["base_nll"] = np.asarray(base_nll)
    arrays["base_tokens"] = base_tokens.astype(np.int32)
    arrays["harmful"] = prompts.harmful
    arrays["request"] = prompts.request
    named_v = vecs.vectors[: vecs.num_named]
    arrays["vector_cosine"] = np.stack(
        [modularity.cosine_matrix(named_v[:, l], named_v[:, l]) for l in layers]
    ).astype(np.float32)
    named = vecs.names[: vecs.num_named]
    arms = [_arm_of(cfg, vecs.names[c], vecs.names[e]) for c, e in pairs]
    meta = {
        "vector_names": list(vecs.names),
        "num_named": vecs.num_named,
        "concepts": list(named),
        "layers": list(layers),
        "coefs": list(cfg["coefs"]),
        "joint_pairs": [[vecs.names[c], vecs.names[e]] for c, e in pairs],
        "joint_arms": arms,
        # Cells searched per arm (grids x K'^2): equal for the controls and emotion arms.
        "arm_cells": {a: arms.count(a) * len(cfg["joint_coefs"]) ** 2 for a in dict.fromkeys(arms)},
        "joint_coefs": list(cfg["joint_coefs"]),
        "kinds": list(prompts.kinds),
        "num_requests": int(prompts.num_requests),
        "prompt_ids": list(prompts.ids),
        "readout_layer": int(readout_layer),
        "readout_direction_layer": int(min(readout_layer, vecs.vectors.shape[1] - 1)),
        "layer_norms": vecs.layer_norms.tolist(),
        "config": cfg,
    }
    return SweepResults(arrays, meta)
