"""Meshes, logical axis rules, sharded loading and multi-host helpers.

Dimension legend: L layers, D model width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary, B batch (prompts), C conditions, T time.

Every run uses one `('data', 'model')` mesh. Weights are sharded on `model` over their head,
MLP and vocabulary dimensions; prompts and sweep conditions are sharded on `data`. Which mesh
axis a dimension goes to is decided in two steps, as in maxtext and t5x:

1. every Params leaf has *logical* axis names (`logical_axes`), e.g. wq is
   `('layers', 'embed', 'heads', 'head_dim')`;
2. `rules` map logical names to mesh axes (`DEFAULT_RULES`, overridable from a config's
   `mesh.rules`). A dimension that the mesh axis does not divide evenly stays replicated
   (e.g. 8 key/value heads on a 16-way `model` axis), so any checkpoint fits any mesh.

Nothing in the model code knows about meshes: `jax.jit` propagates the shardings of committed
inputs, so the forward pass, extraction, sweeps and probes run sharded unchanged once the
params come from `shard_params` / `load_sharded_params` and batches from `shard_batch`.

Multi-host (TPU pod slices): `maybe_initialize_distributed` before anything touches a device,
every host runs the same program on the same (small) prompt arrays, `shard_batch` hands each
device only its rows, `to_host` gathers results, and only `is_writer()` writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors import safe_open

from emojax.config import ModelConfig
from emojax.params import Params, init_params, param_shapes

Array = jax.Array
AnyMesh = Mesh | AbstractMesh
MESH_AXES = ("data", "model")

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


# ----------------------------------------------------------------------------- meshes


def make_mesh(data: int = -1, model: int = 1, *, devices: Sequence[Any] | None = None) -> Mesh:
    """A `('data', 'model')` mesh over all devices (of every host).

    Args:
      data: size of the data axis; -1 takes all devices left after `model`.
      model: size of the model (tensor-parallel) axis.
      devices: devices to use (default `jax.devices()`).

    Returns:
      The mesh, with Auto axis types so un-annotated model code is partitioned by the compiler.
    """
    devices = list(jax.devices() if devices is None else devices)
    data, model = mesh_shape(len(devices), data, model)
    return jax.make_mesh((data, model), MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def mesh_shape(num_devices: int, data: int = -1, model: int = 1) -> tuple[int, int]:
    """Resolves -1 entries of a (data, model) shape for `num_devices` devices."""
    if model == -1 and data == -1:
        raise ValueError("at most one of mesh.data and mesh.model may be -1")
    if model == -1:
        model = num_devices // data
    if data == -1:
        data = num_devices // model
    if data * model != num_devices or data < 1 or model < 1:
        raise ValueError(f"mesh ({data}, {model}) does not cover {num_devices} devices")
    return data, model


def abstract_mesh(data: int, model: int) -> AbstractMesh:
    """A device-free mesh of the given shape, for planning (`sharding.shard_shape`)."""
    return AbstractMesh((data, model), MESH_AXES, axis_types=(AxisType.Auto,) * 2)


def mesh_from_config(mesh_cfg: Any | None) -> Mesh:
    """`make_mesh` from a config's `mesh` section (`data`, `model`; missing = (-1, 1)).

    Scripts call this once, after `maybe_initialize_distributed(cfg.mesh.distributed)`, and
    pass `rules_from_config(cfg.mesh.rules)` wherever rules are taken.
    """
    get = (lambda k, d: getattr(mesh_cfg, k, d)) if mesh_cfg is not None else (lambda k, d: d)
    return make_mesh(int(get("data", -1)), int(get("model", 1)))


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
    """Context in which bare `PartitionSpec`s refer to `mesh` (`jax.set_mesh`)."""
    with jax.set_mesh(mesh):
        yield mesh


# ----------------------------------------------------------------------------- logical axes


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


# ----------------------------------------------------------------------------- activations


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


# ----------------------------------------------------------------------------- loading


def _fast_slicer(leaf: str, config: ModelConfig) -> Callable | None:
    """Reads one device's block of a per-layer leaf straight from the HF tensor (get_slice).

    Returns `read(hf_slice, index) -> block` for the `nn.Linear` layouts of the RoPE families
    (`[out, in]` weights; emojax splits heads off `out` or `in`), or None where the generic
    path must run (GPT-2's fused Conv1D). `load_sharded_params` checks each slicer against
    `loading.tensor_map`'s own transform on layer 0 and falls back when they disagree.
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
    `loading.tensor_map`, the one place that knows HF conventions; the sliced readers of the
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
      loading.CheckpointError: a missing, unexpected or misshapen tensor.
    """
    from emojax import loading

    path = loading.resolve_path(path)
    config = ModelConfig.from_pretrained(path)
    tmap = loading.tensor_map(config)
    np_dtype = np.dtype(jnp.dtype(dtype))

    with contextlib.ExitStack() as stack:
        tensors: dict[str, Any] = {}  # canonical HF name -> lazy safetensors slice
        for file in loading.checkpoint_files(path):
            f = stack.enter_context(safe_open(file, framework="numpy"))
            for raw in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                name = loading.canonical_name(raw, config)
                if name in tmap:
                    tensors[name] = f.get_slice(raw)
                elif not name.endswith(loading._IGNORED_SUFFIXES) and not (
                    name == "lm_head.weight" and config.tie_embeddings
                ):
                    raise loading.CheckpointError(f"unexpected tensor {raw!r} in {path}")
        missing = sorted(set(tmap) - set(tensors))
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise loading.CheckpointError(
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
                    raise loading.CheckpointError(
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


# ----------------------------------------------------------------------------- multi-host

_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def _multihost_env() -> bool:
    """True when the environment describes a multi-process JAX job."""
    if os.environ.get("EMOJAX_DISTRIBUTED", "").lower() in ("1", "true", "yes"):
        return True
    if any(os.environ.get(k) for k in _COORDINATOR_ENV):
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return True
    return bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def maybe_initialize_distributed(flag: bool | str | None = None) -> bool:
    """Calls `jax.distributed.initialize()` when asked, or when the env says multi-host.

    Must run before the first use of `jax.devices()`. On Cloud TPU pod slices JAX discovers
    the coordinator and process ids itself; `tpu/launch.sh` sets EMOJAX_DISTRIBUTED=1.

    Args:
      flag: True / "yes" forces initialisation, False / "no" forbids it, None / "auto"
        (default) auto-detects from
        EMOJAX_DISTRIBUTED, JAX_COORDINATOR_ADDRESS, TPU_WORKER_HOSTNAMES (> 1 host) or
        MEGASCALE_COORDINATOR_ADDRESS.

    Returns:
      Whether this process is part of an initialised multi-process job.
    """
    if isinstance(flag, str):  # a config's mesh.distributed: "auto" | "yes" | "no"
        flag = {"auto": None, "yes": True, "true": True, "no": False, "false": False}[flag.lower()]
    if flag is False or (flag is None and not _multihost_env()):
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize()
    return True


def is_writer() -> bool:
    """True on the one process (0) that writes results, plots and reports."""
    return jax.process_index() == 0


def to_host(x: Any) -> Any:
    """Gathers (a pytree of) global arrays to full numpy arrays on every process."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(one, x)


def sync(name: str) -> None:
    """Barrier across processes (no-op with one process), e.g. after process 0 writes."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def broadcast_from_writer(x: Any) -> Any:
    """Process 0's value of a pytree of numpy arrays/scalars, on every process.

    Used where only process 0 can see the files (the chunk store's list of finished chunks
    on hosts without a shared filesystem).
    """
    if jax.process_count() == 1:
        return x
    return multihost_utils.broadcast_one_to_all(x)


def writer_exists(path: str) -> bool:
    """Whether `path` exists on process 0, answered identically on every process.

    The chunk store asks this before each chunk; all processes must agree on whether to
    compute it (the computation holds collectives), and only process 0 writes files, which
    other hosts may not see (TPU VM workers share no filesystem by default).
    """
    exists = os.path.exists(path) if is_writer() else False
    return bool(broadcast_from_writer(np.asarray(exists, np.int32)))


def read_on_writer(path: str) -> bytes:
    """The bytes of a file on process 0, on every process (e.g. a finished chunk's .npz)."""
    if jax.process_count() == 1:
        with open(path, "rb") as f:
            return f.read()
    data = b""
    if is_writer():
        with open(path, "rb") as f:
            data = f.read()
    size = int(broadcast_from_writer(np.asarray(len(data), np.int64)))
    buf = np.frombuffer(data, np.uint8) if is_writer() else np.zeros(size, np.uint8)
    return np.asarray(broadcast_from_writer(buf), np.uint8).tobytes()


# ----------------------------------------------------------------------------- planning

# bf16 peak FLOP/s, HBM bytes per chip, chips per host and on-demand US$/chip-hour (list
# prices at the time of writing, us-central regions; check current pricing before a big run).
TPU_SPECS: dict[str, dict[str, float]] = {
    "v5e": {"flops": 197e12, "hbm": 16 * 2**30, "chips_per_host": 4, "usd_hour": 1.20},
    "v5p": {"flops": 459e12, "hbm": 95 * 2**30, "chips_per_host": 4, "usd_hour": 4.20},
    "v6e": {"flops": 918e12, "hbm": 32 * 2**30, "chips_per_host": 4, "usd_hour": 2.70},
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-device memory and sweep cost of one model on one mesh.

    All byte counts are per device. `replicated_dims` lists logical axes whose rule asked for
    sharding but whose size the mesh axis does not divide (they stay replicated).
    """

    mesh: tuple[int, int]
    num_params: int
    param_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    capture_bytes: int
    sweep_flops: float
    sweep_flops_no_reuse: float
    replicated_dims: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.kv_cache_bytes + self.activation_bytes + self.capture_bytes


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def planned_param_bytes(
    config: ModelConfig, mesh: AnyMesh, dtype=jnp.bfloat16, rules=DEFAULT_RULES
) -> tuple[int, tuple[str, ...]]:
    """Param bytes per device from shapes and specs alone (no JAX tracing).

    Returns:
      (bytes, logical axes left replicated because the mesh axis does not divide them).
    """
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    table = dict(rules)
    shapes = jax.tree.leaves(param_shapes(config), is_leaf=_is_shape)
    axes = jax.tree.leaves(logical_axes(config), is_leaf=_is_names)
    specs = jax.tree.leaves(param_specs(config, mesh, rules), is_leaf=lambda x: isinstance(x, P))
    total, replicated_dims = 0, set()
    for shape, names, spec in zip(shapes, axes, specs, strict=True):
        n = 1
        padded = tuple(spec) + (None,) * (len(shape) - len(spec))
        for dim, name, axis in zip(shape, names, padded, strict=True):
            n *= _ceil_div(dim, sizes[axis]) if axis else dim
            wanted = table.get(name)
            if axis is None and wanted and sizes.get(wanted, 1) > 1:
                replicated_dims.add(name)
        total += n
    return total * jnp.dtype(dtype).itemsize, tuple(sorted(replicated_dims))


def sweep_flops(
    config: ModelConfig,
    *,
    prompts: int,
    seq_len: int,
    conditions: int,
    prefix_layer: int = 0,
    logit_positions: int = 1,
) -> float:
    """Forward FLOPs of a steering sweep: 2·N·tokens, with prefix reuse.

    Layers below the injection layer `prefix_layer` run once per prompt; layers from it on
    run once per (condition, prompt); the unembedding runs only at `logit_positions`
    positions per sequence. Attention's T² term is included (it matters for long prompts).

    Args:
      config: the model.
      prompts: N prompts.
      seq_len: T tokens per prompt.
      conditions: C steering conditions (vectors × coefficients) per injection layer.
      prefix_layer: injection layer l (0 = no reuse).
      logit_positions: positions per sequence whose logits a readout needs.

    Returns:
      Total FLOPs.
    """
    c = config
    embed = c.vocab_size * c.d_model * (1 if c.tie_embeddings else 2)
    per_layer = (c.num_params - embed - c.d_model) / c.num_layers
    if c.positional == "learned":
        per_layer -= c.max_position_embeddings * c.d_model / c.num_layers
    attn_t2 = 2 * 2 * seq_len * c.num_heads * c.head_dim  # q·k and p·v per token per layer
    layer_flops = (2 * per_layer + attn_t2) * seq_len  # one layer, one sequence
    head = 2 * c.d_model * c.vocab_size * logit_positions
    l0 = prefix_layer
    prefix = l0 * layer_flops * prompts
    steered = conditions * prompts * ((c.num_layers - l0) * layer_flops + head)
    return float(prefix + steered)


def plan(
    config: ModelConfig,
    mesh: AnyMesh,
    *,
    dtype=jnp.bfloat16,
    batch: int = 64,
    seq_len: int = 256,
    max_new_tokens: int = 0,
    prompts: int = 512,
    conditions: int = 64,
    prefix_layer: int = 0,
    capture: bool = True,
    rules=DEFAULT_RULES,
) -> Plan:
    """Memory per device and FLOPs for a sweep of `conditions` × `prompts` on `mesh`.

    Args:
      config: the model.
      mesh: a Mesh or AbstractMesh with ('data', 'model') axes.
      dtype: parameter / activation dtype.
      batch: global sequences per forward call (prompts × conditions in flight), split on
        `data`.
      seq_len: T prompt tokens.
      max_new_tokens: generated tokens (KV cache covers seq_len + max_new_tokens).
      prompts: N prompts of the sweep.
      conditions: C conditions per injection layer.
      prefix_layer: injection layer used for prefix reuse.
      capture: whether the forward keeps resid [L+1, B, T, D] (float32).
      rules: logical axis rules.

    Returns:
      A Plan.
    """
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    data, model = sizes["data"], sizes["model"]
    itemsize = jnp.dtype(dtype).itemsize
    param_bytes, replicated_dims = planned_param_bytes(config, mesh, dtype, rules)
    c = config
    b = _ceil_div(batch, data)

    def sharded(n: int) -> int:  # a model-sharded dimension, replicated when not divisible
        return n // model if n % model == 0 else n

    kv_len = seq_len + max_new_tokens
    kv = 2 * c.num_layers * b * kv_len * sharded(c.num_kv_heads) * c.head_dim * itemsize
    kv = kv if max_new_tokens else 0
    # Peak transient of one scanned layer: f32 attention scores + MLP hidden (x2 for gate)
    # + a few residual-width buffers; plus f32 logits at one position per sequence.
    scores = b * sharded(c.num_heads) * seq_len * kv_len * 4
    mlp = b * seq_len * sharded(c.d_ff) * itemsize * (3 if c.gated_mlp else 2)
    resid = 4 * b * seq_len * c.d_model * 4
    logits = b * sharded(c.vocab_size) * 4
    activations = scores + mlp + resid + logits
    capture_bytes = (c.num_layers + 1) * b * seq_len * c.d_model * 4 if capture else 0
    kwargs = dict(prompts=prompts, seq_len=seq_len, conditions=conditions)
    return Plan(
        mesh=(data, model),
        num_params=c.num_params,
        param_bytes=param_bytes,
        kv_cache_bytes=kv,
        activation_bytes=activations,
        capture_bytes=capture_bytes,
        sweep_flops=sweep_flops(c, prefix_layer=prefix_layer, **kwargs),
        sweep_flops_no_reuse=sweep_flops(c, prefix_layer=0, **kwargs),
        replicated_dims=replicated_dims,
    )


# config.json fields (from the Hugging Face hub) of the families the README plans for, so
# `scripts/plan.py` can plan a run before any weights are downloaded.
_LLAMA31 = dict(
    model_type="llama",
    vocab_size=128256,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128001,
    rope_scaling=dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    ),
)
_GEMMA2 = dict(
    model_type="gemma2",
    vocab_size=256000,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    sliding_window=4096,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
    tie_word_embeddings=True,
    bos_token_id=2,
    eos_token_id=1,
    pad_token_id=0,
    rope_theta=10000.0,
)
REFERENCE_HF_CONFIGS: dict[str, dict[str, Any]] = {
    "gemma-2-2b": dict(
        _GEMMA2,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
    ),
    "gemma-2-9b": dict(
        _GEMMA2,
        hidden_size=3584,
        intermediate_size=14336,
        num_hidden_layers=42,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=256,
        query_pre_attn_scalar=256,
    ),
    "llama-3.1-8b": dict(
        _LLAMA31,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "llama-3.1-70b": dict(
        _LLAMA31,
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
    ),
    "qwen2.5-7b": dict(
        model_type="qwen2",
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
    ),
}


def reference_config(name_or_path: str) -> ModelConfig:
    """ModelConfig of a checkpoint directory, or of a known model by (hub) name.

    `meta-llama/Llama-3.1-70B-Instruct`, `llama-3.1-70b` and `Llama-3.1-70B` all name the
    same architecture (fine-tunes share their base's shapes).
    """
    if os.path.isfile(os.path.join(name_or_path, "config.json")):
        return ModelConfig.from_pretrained(name_or_path)
    key = name_or_path.rstrip("/").split("/")[-1].lower()
    for suffix in ("-instruct", "-it", "-chat"):
        key = key.removesuffix(suffix)
    if key not in REFERENCE_HF_CONFIGS:
        raise ValueError(
            f"{name_or_path!r} is neither a checkpoint directory nor a known model "
            f"({', '.join(REFERENCE_HF_CONFIGS)})"
        )
    return ModelConfig.from_hf_dict(REFERENCE_HF_CONFIGS[key])
