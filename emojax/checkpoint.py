"""A checkpoint as emojax reads it, whatever its file: the Hugging Face layout <-> `Params`.

Dimension legend: L layers, D model width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary.

One explicit name map per family (`tensor_map`) and every layout change in one place:
PyTorch `nn.Linear` stores `[out, in]`, GPT-2's `Conv1D` stores `[in, out]` and fuses q, k, v;
emojax stores `x @ w` orientation with explicit head axes (`wq [D, H, K]`, `wo [H, K, D]`).
The file adapters sit above this module and hand it (Hugging Face name, array) pairs:
`emojax.safetensors_files` (directories of safetensors files), `emojax.gguf` (llama.cpp files,
renamed to Hugging Face names) and `emojax.parallel.loading` (sharded reads);
`emojax.loading` picks the adapter. Also here: what every adapter returns (`Model`) and raises
(`CheckpointError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax.config import ModelConfig
from emojax.params import Params, param_shapes

Array = jax.Array


class CheckpointError(ValueError):
    """A checkpoint does not match its config: a tensor is missing, unexpected or misshapen."""


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded checkpoint: static config, parameter pytree and tokenizer."""

    config: ModelConfig
    params: Params
    tokenizer: Any
    path: str = ""


# Floating dtypes as safetensors headers name them (`check_tensor_headers`); integer, boolean
# and packed types are not weights emojax reads.
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")

# Keys that carry no weights (non-persistent buffers in older checkpoints).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq", ".attn.masked_bias", ".attn.bias")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Where one Hugging Face tensor goes.

    Attributes:
      leaves: Params leaf paths (e.g. "layers.wq"); several for GPT-2's fused c_attn.
      layer: layer index for stacked leaves, None for global weights.
      to_ours: HF array -> tuple of leaf arrays (one per entry of `leaves`).
      to_hf: tuple of leaf arrays -> HF array.
    """

    leaves: tuple[str, ...]
    layer: int | None
    to_ours: Callable[[Array], tuple[Array, ...]]
    to_hf: Callable[..., Array]


def _same() -> tuple[Callable, Callable]:
    return (lambda w: (w,)), (lambda w: w)


def _transpose() -> tuple[Callable, Callable]:
    return (lambda w: (w.T,)), (lambda w: w.T)


def _linear_in(n: int, k: int) -> tuple[Callable, Callable]:
    """Linear [n*K, D] -> [D, n, K]."""
    return (lambda w: (w.T.reshape(w.shape[1], n, k),)), (lambda w: w.reshape(w.shape[0], -1).T)


def _linear_out(n: int, k: int) -> tuple[Callable, Callable]:
    """Linear [D, n*K] -> [n, K, D]."""
    return (lambda w: (w.T.reshape(n, k, w.shape[0]),)), (lambda w: w.reshape(n * k, -1).T)


def _heads(n: int, k: int) -> tuple[Callable, Callable]:
    """Bias [n*K] -> [n, K]."""
    return (lambda b: (b.reshape(n, k),)), (lambda b: b.reshape(-1))


def _conv_out(n: int, k: int) -> tuple[Callable, Callable]:
    """Conv1D [n*K, D] -> [n, K, D]."""
    return (lambda w: (w.reshape(n, k, -1),)), (lambda w: w.reshape(n * k, -1))


def _fused_qkv_weight(h: int, k: int) -> tuple[Callable, Callable]:
    """GPT-2 c_attn Conv1D [D, 3*H*K] -> wq, wk, wv [D, H, K]."""

    n = h * k

    def to_ours(w):  # slicing (not jnp.split) keeps numpy shards on the host
        return tuple(w[:, i * n : (i + 1) * n].reshape(w.shape[0], h, k) for i in range(3))

    def to_hf(q, kk, v):
        return jnp.concatenate([x.reshape(x.shape[0], -1) for x in (q, kk, v)], axis=1)

    return to_ours, to_hf


def _fused_qkv_bias(h: int, k: int) -> tuple[Callable, Callable]:
    n = h * k

    def to_ours(b):
        return tuple(b[i * n : (i + 1) * n].reshape(h, k) for i in range(3))

    def to_hf(q, kk, v):
        return jnp.concatenate([x.reshape(-1) for x in (q, kk, v)])

    return to_ours, to_hf


def tensor_map(config: ModelConfig) -> dict[str, TensorSpec]:
    """The full name map of a family: HF tensor name -> TensorSpec.

    Args:
      config: the model config.

    Returns:
      One entry per tensor the checkpoint must contain (without an optional `model.` /
      `transformer.` prefix variant; see `canonical_name`).
    """
    c = config
    h, g, k = c.num_heads, c.num_kv_heads, c.head_dim
    out: dict[str, TensorSpec] = {}

    def put(name: str, leaves: str | tuple[str, ...], layer: int | None, fns) -> None:
        leaves = (leaves,) if isinstance(leaves, str) else leaves
        out[name] = TensorSpec(leaves, layer, *fns)

    if c.model_type == "gpt2":
        put("transformer.wte.weight", "embed", None, _same())
        put("transformer.wpe.weight", "pos_embed", None, _same())
        put("transformer.ln_f.weight", "final_norm.scale", None, _same())
        put("transformer.ln_f.bias", "final_norm.bias", None, _same())
        for i in range(c.num_layers):
            p = f"transformer.h.{i}."
            put(p + "ln_1.weight", "layers.attn_norm.scale", i, _same())
            put(p + "ln_1.bias", "layers.attn_norm.bias", i, _same())
            qkv = ("layers.wq", "layers.wk", "layers.wv")
            put(p + "attn.c_attn.weight", qkv, i, _fused_qkv_weight(h, k))
            put(p + "attn.c_attn.bias", ("layers.bq", "layers.bk", "layers.bv"), i,
                _fused_qkv_bias(h, k))  # fmt: skip
            put(p + "attn.c_proj.weight", "layers.wo", i, _conv_out(h, k))
            put(p + "attn.c_proj.bias", "layers.bo", i, _same())
            put(p + "ln_2.weight", "layers.mlp_norm.scale", i, _same())
            put(p + "ln_2.bias", "layers.mlp_norm.bias", i, _same())
            put(p + "mlp.c_fc.weight", "layers.w_up", i, _same())
            put(p + "mlp.c_fc.bias", "layers.b_up", i, _same())
            put(p + "mlp.c_proj.weight", "layers.w_down", i, _same())
            put(p + "mlp.c_proj.bias", "layers.b_down", i, _same())
        if not c.tie_embeddings:
            put("lm_head.weight", "lm_head", None, _transpose())
        return out

    put("model.embed_tokens.weight", "embed", None, _same())
    put("model.norm.weight", "final_norm.scale", None, _same())
    if not c.tie_embeddings:
        put("lm_head.weight", "lm_head", None, _transpose())
    for i in range(c.num_layers):
        p = f"model.layers.{i}."
        put(p + "input_layernorm.weight", "layers.attn_norm.scale", i, _same())
        put(p + "self_attn.q_proj.weight", "layers.wq", i, _linear_in(h, k))
        put(p + "self_attn.k_proj.weight", "layers.wk", i, _linear_in(g, k))
        put(p + "self_attn.v_proj.weight", "layers.wv", i, _linear_in(g, k))
        put(p + "self_attn.o_proj.weight", "layers.wo", i, _linear_out(h, k))
        if c.qkv_bias:
            put(p + "self_attn.q_proj.bias", "layers.bq", i, _heads(h, k))
            put(p + "self_attn.k_proj.bias", "layers.bk", i, _heads(g, k))
            put(p + "self_attn.v_proj.bias", "layers.bv", i, _heads(g, k))
        if c.out_bias:
            put(p + "self_attn.o_proj.bias", "layers.bo", i, _same())
        if c.qk_norm:
            put(p + "self_attn.q_norm.weight", "layers.q_norm.scale", i, _same())
            put(p + "self_attn.k_norm.weight", "layers.k_norm.scale", i, _same())
        if c.post_norms:
            put(p + "post_attention_layernorm.weight", "layers.post_attn_norm.scale", i, _same())
            put(p + "pre_feedforward_layernorm.weight", "layers.mlp_norm.scale", i, _same())
            put(p + "post_feedforward_layernorm.weight", "layers.post_mlp_norm.scale", i, _same())
        else:
            put(p + "post_attention_layernorm.weight", "layers.mlp_norm.scale", i, _same())
        for proj, leaf in (("gate_proj", "w_gate"), ("up_proj", "w_up"), ("down_proj", "w_down")):
            put(p + f"mlp.{proj}.weight", f"layers.{leaf}", i, _transpose())
            if c.mlp_bias:
                put(p + f"mlp.{proj}.bias", f"layers.b{leaf[1:]}", i, _same())
    return out


def is_ignored(name: str, config: ModelConfig) -> bool:
    """True for checkpoint entries that carry no weights emojax needs (buffers, tied heads)."""
    name = canonical_name(name, config)
    return name.endswith(_IGNORED_SUFFIXES) or (name == "lm_head.weight" and config.tie_embeddings)


def canonical_name(name: str, config: ModelConfig) -> str:
    """Maps prefix variants (`h.0...` in original GPT-2 files) onto `tensor_map` names."""
    if config.model_type == "gpt2" and not name.startswith(("transformer.", "lm_head.")):
        return "transformer." + name
    return name


def _spec_entry(raw_name: str, config, spec: dict, where: str):
    """(canonical name, its spec) of a checkpoint tensor; spec None for ignored tensors.

    Raises CheckpointError for a tensor the architecture does not have.
    """
    name = canonical_name(raw_name, config)
    if is_ignored(name, config):
        return name, None
    if name not in spec:
        raise CheckpointError(
            f"unexpected tensor {raw_name!r}{where} for a {config.model_type} model with "
            f"{config.num_layers} layers"
        )
    return name, spec[name]


def check_tensor_headers(
    headers: dict[str, tuple[tuple[int, ...], str]], config: ModelConfig, source: str = ""
) -> None:
    """The checks of `params_from_tensors` (names, shapes, floating dtypes) on headers alone.

    Args:
      headers: name -> (shape, safetensors dtype name), e.g. from
        `emojax.safetensors_files.tensor_headers`.
      config: its config.
      source: the checkpoint, for the messages.

    Raises:
      CheckpointError: naming the missing, unexpected, misshapen or integer-typed tensor.
    """
    spec = tensor_map(config)
    shapes = param_shapes(config)
    where = f" in {source}" if source else ""
    want_cache: dict[tuple, tuple[int, ...]] = {}  # one shape per leaf set, not per layer
    seen = set()
    for raw_name, (shape, dtype) in headers.items():
        name, s = _spec_entry(raw_name, config, spec, where)
        if s is None:
            continue
        key = (s.leaves, s.layer is None, name.rsplit(".", 1)[-1])
        if key not in want_cache:
            want_cache[key] = hf_shape(s, shapes)
        if shape != want_cache[key]:
            raise CheckpointError(
                f"tensor {raw_name!r}{where} has shape {shape}, expected {want_cache[key]} "
                f"for {'/'.join(s.leaves)} (config: d_model={config.d_model}, "
                f"heads={config.num_heads}, kv_heads={config.num_kv_heads}, "
                f"head_dim={config.head_dim}, d_ff={config.d_ff}, vocab={config.vocab_size})"
            )
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"tensor {raw_name!r}{where} has dtype {dtype}; emojax loads floating-point "
                "weights only (quantized / integer checkpoints are not supported)"
            )
        seen.add(name)
    missing = sorted(set(spec) - seen)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"missing tensor(s){where}: {', '.join(missing[:5])}{more}")


def _get_leaf(tree, path: str):
    for part in path.split("."):
        tree = getattr(tree, part)
    return tree


def _set_leaves(tree, values: dict[str, Any]):
    """Returns `tree` with the leaves at dotted paths replaced."""
    nested: dict[str, Any] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        nested.setdefault(head, {})[rest] = value
    updates = {}
    for head, sub in nested.items():
        if "" in sub:
            updates[head] = sub[""]
        else:
            updates[head] = _set_leaves(getattr(tree, head), sub)
    return tree.replace(**updates)


def params_from_tensors(
    tensors: Iterator[tuple[str, Any]], config: ModelConfig, dtype=jnp.float32, source: str = ""
) -> Params:
    """Assembles Params from (HF name, array) pairs, checking names and shapes.

    Raises:
      CheckpointError: naming the missing, unexpected, misshapen or integer-typed tensor.
    """
    spec = tensor_map(config)
    shapes = param_shapes(config)
    per_layer: dict[str, list[Any]] = {}
    globals_: dict[str, Any] = {}
    seen = set()
    where = f" in {source}" if source else ""
    for raw_name, value in tensors:
        name, s = _spec_entry(raw_name, config, spec, where)
        if s is None:
            continue
        want_hf = hf_shape(s, shapes)
        if tuple(value.shape) != want_hf:
            raise CheckpointError(
                f"tensor {raw_name!r}{where} has shape {tuple(value.shape)}, expected {want_hf} "
                f"for {'/'.join(s.leaves)} (config: d_model={config.d_model}, "
                f"heads={config.num_heads}, kv_heads={config.num_kv_heads}, "
                f"head_dim={config.head_dim}, d_ff={config.d_ff}, vocab={config.vocab_size})"
            )
        check_weight_dtype(raw_name, value, where)
        arrays = s.to_ours(jnp.asarray(value))
        for leaf, arr in zip(s.leaves, arrays, strict=True):
            want = _get_leaf(shapes, leaf)
            want = want if s.layer is None else want[1:]
            if tuple(arr.shape) != tuple(want):
                raise CheckpointError(
                    f"tensor {raw_name!r}{where} has shape {tuple(value.shape)}, which does not "
                    f"fit {leaf} of shape {tuple(want)} (config: d_model={config.d_model}, "
                    f"heads={config.num_heads}, kv_heads={config.num_kv_heads}, "
                    f"head_dim={config.head_dim}, d_ff={config.d_ff}, vocab={config.vocab_size})"
                )
            arr = arr.astype(dtype)
            if s.layer is None:
                globals_[leaf] = arr
            else:
                per_layer.setdefault(leaf, [None] * config.num_layers)[s.layer] = arr
        seen.add(name)
    missing = sorted(set(spec) - seen)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"missing tensor(s){where}: {', '.join(missing[:5])}{more}")
    values = dict(globals_)
    values.update({leaf: jnp.stack(arrs) for leaf, arrs in per_layer.items()})
    return _set_leaves(_empty_params(shapes), values)


def hf_shape(spec: TensorSpec, shapes: Params) -> tuple[int, ...]:
    """The shape the checkpoint must store for `spec`, derived from the config's shapes."""
    leaf_shapes = []
    for leaf in spec.leaves:
        shape = _get_leaf(shapes, leaf)
        leaf_shapes.append(jax.ShapeDtypeStruct(shape if spec.layer is None else shape[1:], "f4"))
    return tuple(jax.eval_shape(spec.to_hf, *leaf_shapes).shape)


def _empty_params(shapes: Params) -> Params:
    """Params with every array leaf set to a placeholder, to be overwritten."""
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x)
    return jax.tree.map(lambda s: None, shapes, is_leaf=is_shape)


def to_hf_tensors(params: Params, config: ModelConfig) -> dict[str, np.ndarray]:
    """The inverse of `params_from_tensors`: HF tensor name -> float32 numpy array."""
    out = {}
    for name, s in tensor_map(config).items():
        leaves = [_get_leaf(params, leaf) for leaf in s.leaves]
        if s.layer is not None:
            leaves = [x[s.layer] for x in leaves]
        out[name] = np.ascontiguousarray(np.asarray(s.to_hf(*leaves), dtype=np.float32))
    return out


def check_weight_dtype(name: str, value: Any, where: str = "") -> None:
    """A checkpoint tensor of a floating dtype (integer weights would be cast silently).

    Raises:
      CheckpointError: naming the tensor and its dtype.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise CheckpointError(
            f"tensor {name!r}{where} has dtype {dtype}; emojax loads floating-point weights "
            "only (quantized / integer checkpoints are not supported)"
        )
