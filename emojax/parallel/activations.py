"""Batches and activations on the mesh: rows on `data`, each device reading only its own.

Dimension legend: B batch (prompts), C conditions, T time, D model width.

Prompts (and sweep conditions) are split on `data`: `shard_batch` places a host array whose
rows every host holds, `host_local_batch` / `global_batch` assemble per-host slices,
`pad_batch` makes a row count divisible. `constrain` and `sharded_jit` pin layouts inside
and at the edge of compiled programs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from emojax.parallel.mesh import use_mesh
from emojax.parallel.rules import DEFAULT_RULES, logical_to_spec

Array = jax.Array


def data_spec(ndim: int, axis: int = 0) -> P:
    """PartitionSpec sharding dimension `axis` of an `ndim`-array on `data`."""
    return P(*[("data" if i == axis else None) for i in range(ndim)])


def data_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """NamedSharding with dimension `axis` on `data`, the rest replicated."""
    return NamedSharding(mesh, data_spec(ndim, axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated NamedSharding on `mesh`."""
    return NamedSharding(mesh, P())


def pad_batch(x: np.ndarray, multiple: int, axis: int = 0) -> tuple[np.ndarray, int]:
    """Pads `axis` up to a multiple by repeating the last row; returns (padded, true size).

    Repeating a real row (rather than zeros) keeps padded prompts well-formed, so attention
    never sees an all-masked row; callers drop the extra rows after gathering.
    """
    n = x.shape[axis]
    extra = -n % multiple
    if extra == 0:
        return x, n
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths, mode="edge"), n


def shard_batch(x: Any, mesh: Mesh, axis: int = 0) -> Array:
    """A global array with dimension `axis` on `data`, each device reading only its rows.

    Every host passes the same full (host) array; on a multi-host pod each host materialises
    only the rows of its own devices. The sharded dimension must divide by the `data` size
    (see `pad_batch`).
    """
    x = np.asarray(x)
    sharding = data_sharding(mesh, x.ndim, axis)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def shard_tree(tree: Any, mesh: Mesh, axis: int = 0) -> Any:
    """`shard_batch` over every array leaf of a pytree (e.g. tokens + masks, Interventions)."""
    return jax.tree.map(lambda x: shard_batch(x, mesh, axis), tree)


def host_local_batch(x: Any, mesh: Mesh, axis: int = 0) -> np.ndarray:
    """The rows of a global batch that this process's devices hold (its input slice).

    With `global_batch` this is the "each host feeds its own slice" path for data that is
    produced per host; `shard_batch` covers the common case where every host has all rows.
    """
    x = np.asarray(x)
    start, stop = host_local_range(x.shape[axis], mesh)
    return np.take(x, np.arange(start, stop), axis=axis)


def host_local_range(n: int, mesh: Mesh) -> tuple[int, int]:
    """[start, stop) of the `n` data rows whose shards live on this process."""
    sharding = data_sharding(mesh, 1)
    idx = sharding.addressable_devices_indices_map((n,)).values()
    starts = [s[0].indices(n)[0] for s in idx]
    stops = [s[0].indices(n)[1] for s in idx]
    return min(starts), max(stops)


def global_batch(local: Any, mesh: Mesh, global_rows: int, axis: int = 0) -> Array:
    """Assembles per-host slices (from `host_local_batch`) into one global data-sharded array."""
    local = np.asarray(local)
    shape = list(local.shape)
    shape[axis] = global_rows
    sharding = data_sharding(mesh, local.ndim, axis)
    return jax.make_array_from_process_local_data(sharding, local, tuple(shape))


def constrain(x: Array, names: Sequence[str], mesh: Mesh, rules=DEFAULT_RULES) -> Array:
    """`with_sharding_constraint` by logical names (e.g. `('batch', 'time', 'act_embed')`)."""
    spec = logical_to_spec(names, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def sharded_jit(
    fn: Callable,
    mesh: Mesh,
    *,
    in_shardings: Any = None,
    out_shardings: Any = None,
    static_argnames: Sequence[str] = (),
) -> Callable:
    """`jax.jit` with explicit layouts, run inside `use_mesh(mesh)`.

    Plain `jax.jit` already follows the shardings of committed inputs (what `shard_params`
    and `shard_batch` return); use this to pin output layouts, e.g. `data_sharding(mesh, 3)`
    for per-prompt readouts so `to_host` gathers rows without a reshuffle.
    """
    kwargs = {}
    if in_shardings is not None:
        kwargs["in_shardings"] = in_shardings
    if out_shardings is not None:
        kwargs["out_shardings"] = out_shardings
    jitted = jax.jit(fn, static_argnames=tuple(static_argnames), **kwargs)

    def call(*args, **kw):
        with use_mesh(mesh):
            return jitted(*args, **kw)

    return call
