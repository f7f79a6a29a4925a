"""`run_sweep`: one model's steering sweep, step by step, resumable from its chunk store.

Dimension legend: C conditions, N evaluation prompts, T their length, M neutral prompts, T'
their length, D model width, V vocabulary, J concept readouts, L layers.

The steps: resolve the settings and build the condition table (`_plan`); open the chunk store
keyed by everything that decides the numbers (`_chunk_store`); one unsteered pass for prefix
reuse and the baseline readouts (`_unsteered`); every condition, chunk by chunk, each chunk
stored atomically (`_run_conditions`: a killed sweep resumes and produces identical results);
the per-prompt readouts assembled into grids (`_readouts`); their metrics (`summarize`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax import readouts as ro
from emojax import results as res
from emojax import sharding, validate
from emojax.sweep.assemble import SweepResults, _assemble_flat, _to_grids
from emojax.sweep.chunks import _chunk_shape, _chunks, _layer_rows, _pad_rows, _run_chunk
from emojax.sweep.conditions import (
    Conditions,
    SteeringVectors,
    _resolve_config,
    build_conditions,
    joint_pairs,
    resolve_layers,
    steering_matrix,
)
from emojax.sweep.programs import _base_neutral, _base_pass
from emojax.sweep.prompts import SweepPrompts
from emojax.sweep.summary import summarize

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a sweep runs, resolved from its inputs before any model work.

    Attributes:
      cfg: the resolved sweep settings (`default_config` keys).
      vecs: named then random unit directions [I, L, D] and the norm unit [L].
      layers: the injection layers, sorted.
      readout_layer: residual-stream index in [0, L] of the projections.
      pairs: the joint grids' (control, partner) vector indices.
      cond: the flat condition table (every grid cell of every readout grid).
      unique: indices into `cond` of the distinct conditions that are run: cells that add the
        same vector at the same layer (the (0, 0) cell of every joint grid, a joint cell with
        one coefficient 0 and the single-vector cell it equals) are computed once.
      inverse: int [C], the distinct condition each cell of `cond` reads.
      steer_all: [C', D] vector each distinct condition adds.
      refusal_ids: refusal-start token ids.
      refusal: bool [V] refusal-start tokens.
      read_dirs: [J, D] concept directions at the readout layer over its norm unit.
      eos: end-of-sequence ids (responses are cut there).
    """

    cfg: dict[str, Any]
    vecs: SteeringVectors
    layers: tuple[int, ...]
    readout_layer: int
    pairs: list[tuple[int, int]]
    cond: Conditions
    unique: np.ndarray
    inverse: np.ndarray
    steer_all: np.ndarray
    refusal_ids: Sequence[int]
    refusal: Array
    read_dirs: Array
    eos: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _Unsteered:
    """The unsteered pass: resid[l] at each sweep layer (prefix reuse) and baseline readouts.

    Attributes:
      h_eval: layer -> [N, T, D] resid[layer] of the evaluation prompts.
      h_neutral: layer -> [M, T', D] resid[layer] of the neutral prompts.
      score: [N] refusal scores.
      projection: [N, J] concept projections at the readout layer.
      last_logits: [M, V] neutral prompts' last-position logits (the KL reference).
      nll: [M] neutral prompts' mean token NLL.
    """

    h_eval: dict[int, Array]
    h_neutral: dict[int, Array]
    score: Array
    projection: np.ndarray
    last_logits: Array
    nll: Array


def _plan(model: Any, vectors: Any, prompts: SweepPrompts, config: Any, refusal_ids: Any) -> _Plan:
    """Checks the inputs against the model and builds the condition table (no model work)."""
    cfg = _resolve_config(config)
    mcfg, tok = model.config, model.tokenizer
    validate.sweep_inputs(mcfg, vectors, prompts, cfg)
    vecs = SteeringVectors.build(vectors, cfg["vectors"], cfg["num_random"], cfg["seed"])
    layers = resolve_layers(cfg["layers"], mcfg.num_layers)
    readout_layer = cfg["readout_layer"] % (mcfg.num_layers + 1)
    dir_layer = min(readout_layer, vecs.vectors.shape[1] - 1)
    pairs, _ = joint_pairs(cfg, vecs.names, vecs.num_named)
    cond = build_conditions(
        layers,
        len(vecs.names),
        vecs.num_named,
        cfg["coefs"],
        pairs,
        cfg["joint_coefs"],
        cfg["generate_random"],
    )
    unique, inverse = _distinct(cond)
    steer_all = steering_matrix(cond, vecs)[unique]
    if refusal_ids is None:
        refusal_ids = ro.refusal_token_ids(tok)
    validate.check_token_ids(refusal_ids, mcfg.vocab_size, name="refusal_ids")
    refusal = ro.refusal_mask(np.asarray(refusal_ids), mcfg.vocab_size)
    read_dirs = jnp.asarray(vecs.vectors[: vecs.num_named, dir_layer] / vecs.layer_norms[dir_layer])
    eos = tuple(mcfg.eos_token_id) or ((tok.eos_token_id,) if tok is not None else ())
    return _Plan(
        cfg, vecs, layers, readout_layer, pairs, cond, unique, inverse, steer_all, refusal_ids,
        refusal,
        read_dirs, eos,
    )  # fmt: skip


def _distinct(cond: Conditions) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the distinct (layer, weights) rows, [C] index of each row among them).

    A distinct row generates when any of its copies does. The unsteered base row comes first.
    """
    keys = np.concatenate([cond.layer[:, None].astype(np.float32), cond.weights], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the table's order: row 0 (the base) first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def _chunk_store(
    workdir: str | None, model: Any, prompts: SweepPrompts, plan: _Plan
) -> res.ChunkStore | None:
    """The store of finished chunks, keyed by everything that decides their numbers."""
    if workdir is None:
        return None
    vecs = plan.vecs
    spec = {
        "config": plan.cfg,
        "prompts": prompts.fingerprint(),
        "vectors": res.fingerprint([vecs.names, vecs.vectors, vecs.layer_norms]),
        "params": res.fingerprint(
            [np.asarray(x.reshape(-1)[:64]) for x in jax.tree.leaves(model.params)]
        ),
        "refusal_ids": list(map(int, plan.refusal_ids)),
        # The distinct conditions, in the order chunks hold them.
        "conditions": res.fingerprint(
            [plan.cond.layer[plan.unique], plan.cond.weights[plan.unique]]
        ),
        "model": repr(model.config),
    }
    return res.ChunkStore(
        os.path.join(workdir, "chunks"), res.fingerprint(spec), sharding.WRITER_FILES
    )


def _unsteered(model: Any, prompts: SweepPrompts, plan: _Plan) -> _Unsteered:
    """The unsteered pass: resid[l] for prefix reuse and the baseline readouts."""
    params, mcfg = model.params, model.config
    tokens, mask = jnp.asarray(prompts.tokens), jnp.asarray(prompts.mask)
    ntokens, nmask = jnp.asarray(prompts.neutral_tokens), jnp.asarray(prompts.neutral_mask)
    resid, base_score = _base_pass(params, mcfg, tokens, mask, plan.refusal)
    nresid, base_last, base_nll = _base_neutral(params, mcfg, ntokens, nmask)
    base_proj = np.asarray(
        jnp.einsum(
            "nd,jd->nj", resid[plan.readout_layer][:, -1].astype(jnp.float32), plan.read_dirs
        )
    )
    return _Unsteered(
        h_eval={layer: resid[layer] for layer in plan.layers},
        h_neutral={layer: nresid[layer] for layer in plan.layers},
        score=base_score,
        projection=base_proj,
        last_logits=base_last,
        nll=base_nll,
    )


def _run_conditions(
    model: Any,
    prompts: SweepPrompts,
    plan: _Plan,
    base: _Unsteered,
    store: res.ChunkStore | None,
    progress: Callable[[int, int, float], None] | None,
) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Every condition, chunk by chunk (sizes fixed per layer, so shapes never change).

    A chunk already in `store` is loaded; a new one is computed and stored.

    Returns:
      (condition indices, that chunk's outputs) per chunk.
    """
    params, mcfg, cfg = model.params, model.config, plan.cfg
    layer_of = plan.cond.layer[plan.unique]
    # A distinct condition generates when any of the cells it serves does.
    generate = np.zeros(len(plan.unique), bool)
    np.logical_or.at(generate, plan.inverse, plan.cond.generate)
    tokens, mask = jnp.asarray(prompts.tokens), jnp.asarray(prompts.mask)
    ntokens, nmask = jnp.asarray(prompts.neutral_tokens), jnp.asarray(prompts.neutral_mask)
    n, t = prompts.tokens.shape
    m, tn = prompts.neutral_tokens.shape
    w = cfg["max_new_tokens"]
    total = len(plan.unique)
    done, t0 = 0, time.perf_counter()
    chunk_out: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    for layer in plan.layers:
        readout = plan.readout_layer - layer if plan.readout_layer > layer else None
        rows = _layer_rows(mcfg, t, tn, w, layer, readout, cfg["memory_mb"])
        for gen_flag in (True, False):
            idx = np.nonzero((layer_of == layer) & (generate == gen_flag))[0]
            if not len(idx):
                continue
            size, blocks = _chunk_shape(rows, n, m, len(idx))
            for ci, chunk in enumerate(_chunks(idx, size)):
                key = f"l{layer:03d}_{'gen' if gen_flag else 'pre'}_{ci:05d}"
                if store is not None and store.has(key):
                    out = store.load(key)
                else:
                    steer = jnp.asarray(_pad_rows(plan.steer_all[chunk], size))
                    out = _run_chunk(
                        params, mcfg, layer, readout, steer, gen_flag,
                        (tokens, mask, base.h_eval[layer]), (ntokens, nmask, base.h_neutral[layer]),
                        plan.refusal, plan.read_dirs, base.last_logits, base.nll, w, blocks,
                    )  # fmt: skip
                    out = {k: v[: len(chunk)] for k, v in out.items()}
                    if store is not None:
                        store.save(key, out)
                chunk_out.append((chunk, out))
                done += len(chunk)
                if progress is not None:
                    progress(done, total, time.perf_counter() - t0)
    return chunk_out


def _readouts(
    chunk_out: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    model: Any,
    prompts: SweepPrompts,
    plan: _Plan,
    base: _Unsteered,
    classify: Callable[[str], bool],
) -> SweepResults:
    """The chunks' outputs as per-prompt readout grids (behaviour and style from the text)."""
    n, m = prompts.num_prompts, prompts.neutral_tokens.shape[0]
    total, w = len(plan.unique), plan.cfg["max_new_tokens"]
    flat = _assemble_flat(chunk_out, total, n, m, w, plan.vecs.num_named)
    flat = {k: v[plan.inverse] for k, v in flat.items()}  # every cell reads its condition
    return _to_grids(
        flat,
        plan.cond,
        prompts,
        model.tokenizer,
        plan.eos,
        plan.layers,
        plan.vecs,
        plan.cfg,
        plan.pairs,
        plan.readout_layer,
        base.score,
        base.projection,
        base.nll,
        classify,
    )


def run_sweep(
    model: Any,
    vectors: Any,
    prompts: SweepPrompts,
    config: Any = None,
    workdir: str | None = None,
    *,
    refusal_ids: Sequence[int] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    classify: Callable[[str], bool] | None = None,
) -> SweepResults:
    """Runs a steering sweep and its metrics on one model.

    Args:
      model: an `emojax.Model` (config, params, tokenizer), or a checkpoint directory.
      vectors: a `VectorSet` (unit `vectors [C, L, D]`, `layer_norms [L]`, `concepts`).
      prompts: the tokenised evaluation and neutral prompts (`SweepPrompts`).
      config: sweep settings (dict or ConfigDict; see `default_config`).
      workdir: where chunks (`chunks/`), `readouts.npz`, `sweep_meta.json` and
        `summary.json` go; None keeps everything in memory (no resumption).
      refusal_ids: refusal-start token ids; default from the tokenizer
        (`readouts.refusal_token_ids`).
      progress: called after each chunk with (conditions done, total, seconds elapsed).
      classify: the refusal classifier of the responses (`readouts.response_classifier`);
        None = `readouts.classify_response`.

    Returns:
      `SweepResults` with per-prompt readouts, metadata and `summary` metrics.
    """
    if isinstance(model, str | os.PathLike):
        from emojax.loading import load_model

        model = load_model(os.fspath(model))
    plan = _plan(model, vectors, prompts, config, refusal_ids)
    store = _chunk_store(workdir, model, prompts, plan)

    timing, t_start = {}, time.perf_counter()
    base = _unsteered(model, prompts, plan)
    timing["base_s"] = time.perf_counter() - t_start
    t0 = time.perf_counter()
    chunk_out = _run_conditions(model, prompts, plan, base, store, progress)
    timing["chunks_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = _readouts(chunk_out, model, prompts, plan, base, classify or ro.classify_response)
    timing["readouts_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    results.summary = summarize(results)
    timing["summary_s"] = time.perf_counter() - t1
    timing["total_s"] = time.perf_counter() - t_start
    results.meta["timing_s"] = timing
    results.meta["num_conditions"] = len(plan.unique)  # distinct conditions run
    results.meta["num_cells"] = len(plan.cond.layer)  # grid cells they fill
    if workdir is not None:
        results.save(workdir)
    return results
