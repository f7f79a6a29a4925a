"""Parameter pytrees: every per-layer weight stacked on a leading layer axis.

Dimension legend: L layers, D model width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary, P learned positions.

Weights are stored in the orientation the forward pass contracts them in (`x @ w`), so
`loading.py` is the only place that knows about PyTorch's `[out, in]` layout. Optional
weights (biases, q/k norms, post norms, learned positions, an untied unembedding) are None
when the family has none; None leaves are not pytree leaves, so `jax.tree.map` skips them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from emojax.config import ModelConfig

Array = jax.Array


@struct.dataclass
class Norm:
    """RMSNorm (bias None) or LayerNorm weights, shape [..., D]."""

    scale: Array
    bias: Array | None = None


@struct.dataclass
class LayerParams:
    """Decoder-layer weights, each with a leading L axis."""

    attn_norm: Norm  # [L, D]
    wq: Array  # [L, D, H, K]
    wk: Array  # [L, D, G, K]
    wv: Array  # [L, D, G, K]
    wo: Array  # [L, H, K, D]
    mlp_norm: Norm  # [L, D]
    w_up: Array  # [L, D, F]
    w_down: Array  # [L, F, D]
    w_gate: Array | None = None  # [L, D, F]
    bq: Array | None = None  # [L, H, K]
    bk: Array | None = None  # [L, G, K]
    bv: Array | None = None  # [L, G, K]
    bo: Array | None = None  # [L, D]
    b_up: Array | None = None  # [L, F]
    b_down: Array | None = None  # [L, D]
    b_gate: Array | None = None  # [L, F]
    q_norm: Norm | None = None  # [L, K]
    k_norm: Norm | None = None  # [L, K]
    post_attn_norm: Norm | None = None  # [L, D]
    post_mlp_norm: Norm | None = None  # [L, D]


@struct.dataclass
class Params:
    """All weights of a decoder-only language model."""

    embed: Array  # [V, D]
    layers: LayerParams
    final_norm: Norm  # [D]
    lm_head: Array | None = None  # [D, V]; None when tied to `embed`
    pos_embed: Array | None = None  # [P, D] learned positions (GPT-2)


def param_shapes(config: ModelConfig) -> Params:
    """The Params structure with a `jax.ShapeDtypeStruct`-free tuple shape at every leaf."""
    c = config
    L, D, H, G, K, F, V = (
        c.num_layers,
        c.d_model,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.d_ff,
        c.vocab_size,
    )

    def norm(*lead: int, width: int = D) -> Norm:
        return Norm(scale=(*lead, width), bias=(*lead, width) if c.has_norm_bias else None)

    layers = LayerParams(
        attn_norm=norm(L),
        wq=(L, D, H, K),
        wk=(L, D, G, K),
        wv=(L, D, G, K),
        wo=(L, H, K, D),
        mlp_norm=norm(L),
        w_up=(L, D, F),
        w_down=(L, F, D),
        w_gate=(L, D, F) if c.gated_mlp else None,
        bq=(L, H, K) if c.qkv_bias else None,
        bk=(L, G, K) if c.qkv_bias else None,
        bv=(L, G, K) if c.qkv_bias else None,
        bo=(L, D) if c.out_bias else None,
        b_up=(L, F) if c.mlp_bias else None,
        b_down=(L, D) if c.mlp_bias else None,
        b_gate=(L, F) if c.mlp_bias and c.gated_mlp else None,
        q_norm=Norm(scale=(L, K)) if c.qk_norm else None,
        k_norm=Norm(scale=(L, K)) if c.qk_norm else None,
        post_attn_norm=norm(L) if c.post_norms else None,
        post_mlp_norm=norm(L) if c.post_norms else None,
    )
    return Params(
        embed=(V, D),
        layers=layers,
        final_norm=norm(),
        lm_head=None if c.tie_embeddings else (D, V),
        pos_embed=(c.max_position_embeddings, D) if c.positional == "learned" else None,
    )


def _is_shape(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


def abstract_params(config: ModelConfig, dtype=jnp.float32) -> Params:
    """Params of `jax.ShapeDtypeStruct`s: shapes without memory (for eval_shape, sharding)."""
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(config), is_leaf=_is_shape
    )


def init_params(config: ModelConfig, rng: Array, dtype=jnp.float32) -> Params:
    """Random parameters for training from scratch (GPT-2/Llama-style scaled normal init).

    Norm scales start at their identity value (1, or 0 for offset-from-1 norms), biases at 0,
    matrices at N(0, 0.02²) with the residual-writing projections scaled by 1/sqrt(2L).

    Args:
      config: the model config.
      rng: a PRNG key.
      dtype: parameter dtype.

    Returns:
      A Params pytree.
    """
    shapes = param_shapes(config)
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=_is_shape)
    keys = jax.random.split(rng, len(paths))
    out_scale = 0.02 / (2 * config.num_layers) ** 0.5
    leaves = []
    for (path, shape), key in zip(paths, keys, strict=True):
        name = path[-1].name
        if name == "scale":
            value = 0.0 if config.norm_offset else 1.0
            leaves.append(jnp.full(shape, value, dtype))
        elif name.startswith("b"):  # bias, bq, bk, bv, bo, b_up, b_down, b_gate
            leaves.append(jnp.zeros(shape, dtype))
        else:
            std = out_scale if name in ("wo", "w_down") else 0.02
            leaves.append((std * jax.random.normal(key, shape)).astype(dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def count_params(params: Params) -> int:
    """Number of scalars in a Params pytree (works on abstract params too)."""
    return sum(int(jnp.size(x)) if hasattr(x, "size") else 0 for x in jax.tree.leaves(params))


def cast(params: Params, dtype) -> Params:
    """Casts every leaf to `dtype`."""
    return jax.tree.map(lambda x: x.astype(dtype), params)
