"""Chunked execution of a sweep's conditions: chunk and block sizes from a memory budget, and
one chunk through the compiled programs.

Dimension legend: C conditions of a chunk, N evaluation prompts, M neutral prompts, T time,
D model width, J concept readouts, W generated tokens.

Conditions are processed in fixed-size chunks (sized from a memory budget, last chunk padded
so shapes never change); a program splits the prompts into fixed-size blocks (last block
padded) when even one condition's rows exceed the budget.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from emojax.config import ModelConfig
from emojax.sweep.programs import steered_eval, steered_generate_and_eval, steered_neutral


def prefill_row_bytes(
    config: ModelConfig, t: int, start_layer: int, logit_positions: int, capture: bool
) -> int:
    """Rough peak activation bytes of one batch row of a prefill from `start_layer`."""
    c = config
    per_layer = t * (4 * c.d_model + 3 * c.d_ff) + c.num_heads * t * t * 2
    kept = t * c.d_model * ((c.num_layers + 1 - start_layer) if capture else 2)
    return 4 * (per_layer + kept + 2 * logit_positions * c.vocab_size)


def generate_row_bytes(config: ModelConfig, t: int, new: int) -> int:
    """Rough peak bytes of one batch row of cached generation."""
    c = config
    s = t + new
    cache = 2 * c.num_layers * s * c.num_kv_heads * c.head_dim
    act = t * (4 * c.d_model + 3 * c.d_ff) + c.num_heads * t * s * 2
    return 4 * (cache + act + 2 * c.vocab_size)


def rows_for_budget(row_bytes: int, memory_mb: float) -> int:
    """Batch rows of `row_bytes` each that fit in `memory_mb` (at least one)."""
    return max(1, int(memory_mb * 2**20) // max(row_bytes, 1))


def _layer_rows(
    config: ModelConfig, t: int, tn: int, w: int, layer: int, readout: int | None, memory_mb: float
) -> tuple[int, int, int]:
    """Batch rows within the budget at `layer`: (eval prefill, neutral prefill, generation)."""
    rows_e = rows_for_budget(prefill_row_bytes(config, t, layer, 1, readout is not None), memory_mb)
    rows_n = rows_for_budget(prefill_row_bytes(config, tn, layer, tn, False), memory_mb)
    gen_bytes = generate_row_bytes(config, t, w)
    if readout is not None:  # generation also captures the prefill for the projections
        gen_bytes += 4 * t * config.d_model * (config.num_layers - layer)
    return rows_e, rows_n, rows_for_budget(gen_bytes, memory_mb)


def _chunk_shape(
    rows: tuple[int, int, int], n: int, m: int, num: int
) -> tuple[int, tuple[int, int, int]]:
    """(conditions per chunk, prompt blocks (eval, neutral, generation)) for `num` conditions.

    A chunk holds `size` conditions; each program splits prompts into blocks when even one
    condition's rows exceed the budget.
    """
    rows_e, rows_n, rows_g = rows
    size = max(1, min(rows_e // n, rows_n // m, rows_g // n))
    size = min(size, num)
    blocks = tuple(max(1, min(x // size, k)) for x, k in ((rows_e, n), (rows_n, m), (rows_g, n)))
    return size, blocks


def _chunks(idx: np.ndarray, size: int) -> list[np.ndarray]:
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    pad = np.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad], axis=0)


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _blocked(fn: Callable, n: int, block: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Applies fn to prompt blocks of fixed size (last block padded), concatenating on axis 1."""
    outs = []
    for sl in _blocks(n, block):
        args = [_pad_rows(a[sl], block) if a is not None else None for a in arrays]
        out = fn(*args)
        outs.append([np.asarray(o)[:, : sl.stop - sl.start] for o in out])
    return [np.concatenate(parts, axis=1) for parts in zip(*outs, strict=True)]


def _run_chunk(
    params,
    mcfg,
    layer,
    readout,
    steer,
    gen_flag,
    eval_in,
    neutral_in,
    refusal,
    read_dirs,
    base_last,
    base_nll,
    w,
    blocks,
) -> dict[str, np.ndarray]:
    tokens, mask, h = eval_in
    ntokens, nmask, nh = neutral_in
    blk_e, blk_n, blk_g = blocks
    n, m = tokens.shape[0], ntokens.shape[0]
    out = {}
    if gen_flag:  # one steered prefill serves the prefill readouts and generation
        ids, score, proj = _blocked(
            lambda tk, mk: steered_generate_and_eval(
                params,
                mcfg,
                tk,
                mk,
                steer,
                refusal,
                read_dirs,
                layer=layer,
                max_new_tokens=w,
                readout=readout,
            ),
            n,
            blk_g,
            tokens,
            mask,
        )
        out["tokens"] = ids.astype(np.int32)
    else:
        score, proj = _blocked(
            lambda tk, mk, hh: steered_eval(
                params,
                mcfg,
                tk,
                mk,
                hh,
                steer,
                refusal,
                read_dirs,
                start_layer=layer,
                readout=readout,
            ),
            n,
            blk_e,
            tokens,
            mask,
            h,
        )
    kl, nll = _blocked(
        lambda tk, mk, hh, bl, bn: steered_neutral(
            params, mcfg, tk, mk, hh, steer, bl, bn, start_layer=layer
        ),
        m,
        blk_n,
        ntokens,
        nmask,
        nh,
        base_last,
        base_nll,
    )
    out.update(refusal_score=score, projection=proj, kl=kl, nll_delta=nll)
    return out
