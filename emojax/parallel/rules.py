"""Logical axis names of every weight, the rules mapping them to mesh axes, and the layouts.

Dimension legend: L layers, D model width (`embed`), H query heads, G key/value heads
(`kv_heads`), K head dim, F MLP width (`mlp`), V vocabulary.

Each Params leaf has logical axes (`logical_axes`, e.g. wq `('layers', 'embed', 'heads',
'head_dim')`); `DEFAULT_RULES` (or a config's `mesh.rules`, `rules_from_config`) maps each
logical name to a mesh axis or None; `logical_to_spec` turns both into a PartitionSpec,
replicating a dimension the mesh axis does not divide. `param_shardings` and `shard_params`
apply that to a whole Params pytree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from emojax.config import ModelConfig
from emojax.parallel.mesh import AnyMesh
from emojax.params import Params, init_params, param_shapes

Array = jax.Array

# Logical axis name -> mesh axis (None = replicated); `rules_from_config` remaps entries.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("layers", None),
    ("embed", None),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("head_dim", None),
    ("mlp", "model"),
    ("vocab", "model"),
    ("positions", None),
    # Activations.
    ("batch", "data"),
    ("conditions", "data"),
    ("time", None),
    ("act_embed", None),
    ("act_vocab", "model"),
)

# Logical axes of each LayerParams / Params matrix, by field name.
_LEAF_AXES: dict[str, tuple[str, ...]] = {
    "embed": ("vocab", "embed"),
    "lm_head": ("embed", "vocab"),
    "pos_embed": ("positions", "embed"),
    "wq": ("layers", "embed", "heads", "head_dim"),
    "wk": ("layers", "embed", "kv_heads", "head_dim"),
    "wv": ("layers", "embed", "kv_heads", "head_dim"),
    "wo": ("layers", "heads", "head_dim", "embed"),
    "w_up": ("layers", "embed", "mlp"),
    "w_gate": ("layers", "embed", "mlp"),
    "w_down": ("layers", "mlp", "embed"),
    "bq": ("layers", "heads", "head_dim"),
    "bk": ("layers", "kv_heads", "head_dim"),
    "bv": ("layers", "kv_heads", "head_dim"),
    "bo": ("layers", "embed"),
    "b_up": ("layers", "mlp"),
    "b_gate": ("layers", "mlp"),
    "b_down": ("layers", "embed"),
}


def _is_shape(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


def _is_names(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(i, str) for i in x)


def logical_axes(config: ModelConfig) -> Params:
    """The Params structure with a tuple of logical axis names at every leaf."""

    def names(path, shape) -> tuple[str, ...]:
        keys = [getattr(k, "name", str(k)) for k in path]
        leaf = keys[-1]
        if leaf in ("scale", "bias"):  # a Norm: over D, or over K for the q/k norms
            width = "head_dim" if keys[-2] in ("q_norm", "k_norm") else "embed"
            axes = ("layers", width) if keys[0] == "layers" else (width,)
        else:
            axes = _LEAF_AXES[leaf]
        if len(axes) != len(shape):
            raise ValueError(f"logical axes {axes} do not match shape {shape} of {keys}")
        return axes

    return jax.tree_util.tree_map_with_path(names, param_shapes(config), is_leaf=_is_shape)


def rules_from_config(overrides: Mapping[str, str | None] | None = None) -> tuple:
    """`DEFAULT_RULES` with some logical names remapped (value '' or None = replicate).

    Args:
      overrides: e.g. a config's `mesh.rules` ConfigDict, `{"vocab": ""}`.
    """
    overrides = {} if overrides is None else dict(overrides.items())
    unknown = set(overrides) - {k for k, _ in DEFAULT_RULES}
    if unknown:
        raise ValueError(f"unknown logical axes in mesh.rules: {sorted(unknown)}")
    return tuple((k, (overrides[k] or None) if k in overrides else v) for k, v in DEFAULT_RULES)


def logical_to_spec(
    names: Sequence[str],
    shape: Sequence[int],
    mesh: AnyMesh,
    rules: Iterable[tuple[str, str | None]] = DEFAULT_RULES,
) -> P:
    """PartitionSpec for an array whose dimensions have logical `names`.

    A dimension is sharded on the mesh axis its rule names only when that axis divides it
    and no earlier dimension of the array already uses the axis; otherwise it is replicated.
    """
    table = dict(rules)
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape, strict=True):
        if name not in table:
            raise KeyError(f"no sharding rule for logical axis {name!r}")
        axis = table[name]
        if axis is None or axis in used or axis not in sizes or dim % sizes[axis]:
            spec.append(None)
        else:
            used.add(axis)
            spec.append(axis)
    return P(*spec)


def param_specs(config: ModelConfig, mesh: AnyMesh, rules=DEFAULT_RULES) -> Params:
    """A Params pytree of PartitionSpecs (the declared layout of every weight)."""
    shapes = param_shapes(config)
    axes = logical_axes(config)
    return jax.tree.map(
        lambda s, n: logical_to_spec(n, s, mesh, rules), shapes, axes, is_leaf=_is_shape
    )


def param_shardings(config: ModelConfig, mesh: AnyMesh, rules=DEFAULT_RULES) -> Params:
    """A Params pytree of NamedShardings on `mesh`."""
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s),
        param_specs(config, mesh, rules),
        is_leaf=lambda x: isinstance(x, P),
    )


def shard_params(params: Params, mesh: Mesh, config: ModelConfig, rules=DEFAULT_RULES) -> Params:
    """Places (or re-lays-out) a Params pytree with the declared shardings."""
    return jax.device_put(params, param_shardings(config, mesh, rules))


def abstract_sharded_params(
    config: ModelConfig, mesh: AnyMesh, dtype=jnp.bfloat16, rules=DEFAULT_RULES
) -> Params:
    """Params of ShapeDtypeStructs carrying their shardings, without allocating anything.

    Works on an `AbstractMesh`, so a 70B layout on a 64-chip pod can be checked on a laptop.
    """
    init = jax.jit(
        lambda key: init_params(config, key, dtype),
        out_shardings=param_shardings(config, mesh, rules),
    )
    return jax.eval_shape(init, jax.random.key(0))


def init_sharded_params(
    config: ModelConfig, rng: Array, mesh: Mesh, dtype=jnp.float32, rules=DEFAULT_RULES
) -> Params:
    """`init_params` computed directly into sharded arrays (never whole on one device)."""
    init = jax.jit(
        lambda key: init_params(config, key, dtype),
        out_shardings=param_shardings(config, mesh, rules),
    )
    return init(rng)


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a pytree of arrays / ShapeDtypeStructs with shardings."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
    return total
