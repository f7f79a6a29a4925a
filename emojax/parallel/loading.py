"""Sharded loading: a Hugging Face checkpoint read straight into sharded arrays.

Dimension legend: L layers, D model width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary.

Each device reads only its own block of each tensor (`safe_open(...).get_slice`); names and
layouts come from `emojax.checkpoint.tensor_map`, and the layout of every leaf from
`emojax.parallel.rules.param_shardings`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from safetensors import safe_open

from emojax import checkpoint, loading
from emojax.config import ModelConfig
from emojax.parallel.rules import DEFAULT_RULES, _is_shape, param_shardings
from emojax.params import Params, param_shapes

Array = jax.Array


def _fast_slicer(leaf: str, config: ModelConfig) -> Callable | None:
    """Reads one device's block of a per-layer leaf straight from the HF tensor (get_slice).

    Returns `read(hf_slice, index) -> block` for the `nn.Linear` layouts of the RoPE families
    (`[out, in]` weights; emojax splits heads off `out` or `in`), or None where the generic
    path must run (GPT-2's fused Conv1D). `load_sharded_params` checks each slicer against
    `checkpoint.tensor_map`'s own transform on layer 0 and falls back when they disagree.
    """
    if config.model_type == "gpt2":
        return None
    name = leaf.rsplit(".", 1)[-1]
    k = config.head_dim

    def full(s: slice, n: int) -> bool:
        return s.indices(n) == (0, n, 1)

    def heads_rows(hs: slice, ks: slice) -> slice | None:
        if ks != slice(None) and not full(ks, k):
            return None
        start, stop, _ = hs.indices(
            config.num_heads if name in ("wq", "wo", "bq") else config.num_kv_heads
        )
        return slice(start * k, stop * k)

    if name in ("wq", "wk", "wv"):  # HF [n*K, D] -> [D, n, K]

        def read(t, idx):
            d, h, kk = idx
            rows = heads_rows(h, kk)
            if rows is None:
                return None
            w = t[rows, d]
            return w.T.reshape(w.shape[1], -1, k)[..., kk]

        return read
    if name == "wo":  # HF [D, H*K] -> [H, K, D]

        def read(t, idx):
            h, kk, d = idx
            cols = heads_rows(h, kk)
            if cols is None:
                return None
            w = t[d, cols]
            return w.T.reshape(-1, k, w.shape[0])[:, kk]

        return read
    if name in ("bq", "bk", "bv"):  # HF [n*K] -> [n, K]

        def read(t, idx):
            h, kk = idx
            rows = heads_rows(h, kk)
            return None if rows is None else t[rows].reshape(-1, k)[:, kk]

        return read
    if name in ("w_up", "w_gate", "w_down", "lm_head"):  # HF [b, a] -> [a, b]
        return lambda t, idx: t[idx[1], idx[0]].T
    return lambda t, idx: t[idx]  # stored as is (embed, norms, biases)


def load_sharded_params(
    path: str,
    mesh: Mesh,
    *,
    dtype=jnp.bfloat16,
    rules=DEFAULT_RULES,
    stats: dict[str, int] | None = None,
) -> tuple[ModelConfig, Params]:
    """Reads a Hugging Face checkpoint straight into sharded arrays, tensor by tensor.

    Each leaf is built with `jax.make_array_from_callback`: the callback of a device reads
    only that device's block of each layer's tensor (`safe_open(...).get_slice`), so a device
    only ever receives its own shards and a host holds at most one device's shard of one
    weight in flight, never the whole model. Names and layouts come from
    `checkpoint.tensor_map`, the one place that knows HF conventions; the sliced readers of the
    `nn.Linear` families are checked against its transforms once per weight, and GPT-2's
    fused c_attn falls back to reading each whole (small) tensor.

    Args:
      path: checkpoint directory (or a model id in the local HF cache).
      mesh: a ('data', 'model') mesh.
      dtype: parameter dtype.
      rules: logical axis rules.
      stats: if given, filled with `sliced_reads` and `whole_tensor_reads` (blocks read
        with get_slice vs. whole tensors read for a generic transform) and
        `max_read_bytes` (the largest single read from disk); the one-off check of each
        sliced reader against the generic transform (one layer-0 tensor per leaf) is not
        counted.

    Returns:
      (config, params), params laid out as `param_shardings(config, mesh, rules)`.

    Raises:
      checkpoint.CheckpointError: a missing, unexpected or misshapen tensor.
    """
    path = loading.resolve_path(path)
    config = ModelConfig.from_pretrained(path)
    tmap = checkpoint.tensor_map(config)
    np_dtype = np.dtype(jnp.dtype(dtype))

    with contextlib.ExitStack() as stack:
        tensors: dict[str, Any] = {}  # canonical HF name -> lazy safetensors slice
        for file in loading.checkpoint_files(path):
            f = stack.enter_context(safe_open(file, framework="numpy"))
            for raw in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                name = checkpoint.canonical_name(raw, config)
                if name in tmap:
                    tensors[name] = f.get_slice(raw)
                elif not checkpoint.is_ignored(name, config):
                    raise checkpoint.CheckpointError(f"unexpected tensor {raw!r} in {path}")
        missing = sorted(set(tmap) - set(tensors))
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise checkpoint.CheckpointError(
                f"missing tensor(s) in {path}: {', '.join(missing[:5])}{more}"
            )

        # Params leaf path -> {layer (None for global leaves): (HF name, output of to_ours)}.
        sources: dict[str, dict[int | None, tuple[str, int]]] = {}
        shapes = param_shapes(config)
        converted: dict[tuple, Any] = {}  # every layer of a leaf has the same transform
        for name, spec in tmap.items():
            hf = jax.ShapeDtypeStruct(tuple(tensors[name].get_shape()), np.float32)
            key = (spec.leaves, spec.layer is None, hf.shape)
            if key not in converted:
                converted[key] = jax.eval_shape(spec.to_ours, hf)
            outs = converted[key]
            for j, leaf in enumerate(spec.leaves):
                want = _get_path(shapes, leaf)
                want = want if spec.layer is None else want[1:]
                if tuple(outs[j].shape) != tuple(want):
                    raise checkpoint.CheckpointError(
                        f"tensor {name!r} in {path} has shape {hf.shape}, which does not fit "
                        f"{leaf} of shape {want}"
                    )
                sources.setdefault(leaf, {})[spec.layer] = (name, j)

        counts = {"sliced_reads": 0, "whole_tensor_reads": 0, "max_read_bytes": 0}
        if stats is not None:
            counts = stats
            stats.update(sliced_reads=0, whole_tensor_reads=0, max_read_bytes=0)

        def count(kind: str, x: np.ndarray) -> np.ndarray:
            counts[kind] += 1
            counts["max_read_bytes"] = max(counts["max_read_bytes"], x.nbytes)
            return x

        def generic(name: str, j: int, idx: tuple, counted: bool = True) -> np.ndarray:
            """Whole tensor through `to_ours`, then this block (GPT-2's fused c_attn)."""
            whole = tensors[name][:]
            whole = count("whole_tensor_reads", whole) if counted else whole
            return np.asarray(tmap[name].to_ours(whole)[j])[idx]

        def build(leaf: str, shape: tuple[int, ...], sharding: NamedSharding) -> Array:
            src = sources[leaf]
            stacked = None not in src
            fast = _fast_slicer(leaf, config)
            if fast is not None:  # trust the sliced reader only where it agrees on layer 0
                idx = tuple(next(iter(sharding.devices_indices_map(shape).values())))
                idx = idx[1:] if stacked else idx
                name, j = src[0 if stacked else None]
                block = fast(tensors[name], idx)
                if block is None or not np.array_equal(block, generic(name, j, idx, False)):
                    fast = None

            def read(name: str, j: int, idx: tuple) -> np.ndarray:
                block = None if fast is None else fast(tensors[name], idx)
                if block is None:
                    block = generic(name, j, idx)
                else:
                    count("sliced_reads", block)
                return np.asarray(block).astype(np_dtype)

            def callback(index: tuple) -> np.ndarray:
                index = tuple(index) + (slice(None),) * (len(shape) - len(index))
                if not stacked:
                    return read(*src[None], index)
                layers = range(*index[0].indices(shape[0]))
                return np.stack([read(*src[i], index[1:]) for i in layers])

            return jax.make_array_from_callback(shape, sharding, callback)

        flat, treedef = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=_is_shape)
        shardings = jax.tree.leaves(
            param_shardings(config, mesh, rules), is_leaf=lambda x: isinstance(x, NamedSharding)
        )
        leaves = [
            build(".".join(k.name for k in p), shape, s)
            for (p, shape), s in zip(flat, shardings, strict=True)
        ]
    return config, jax.tree_util.tree_unflatten(treedef, leaves)


def _get_path(tree: Any, path: str) -> Any:
    for part in path.split("."):
        tree = getattr(tree, part)
    return tree
