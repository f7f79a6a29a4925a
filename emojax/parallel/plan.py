"""Planning a run before it starts: memory per device and sweep FLOPs of a model on a mesh.

Dimension legend: L layers, D model width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary, B batch, C conditions, N prompts, T time.

Works from shapes and PartitionSpecs alone (an `AbstractMesh` is enough, no device and no
weight), so `scripts/plan.py` can size a 70B run on a laptop; `REFERENCE_HF_CONFIGS` holds
the config.json fields of the families the README plans for, `REGISTERED_ARCHITECTURES` the
family of each registered model (`emojax.models`), and `CHIP_SPECS` the TPUs and GPUs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from emojax.config import ModelConfig
from emojax.parallel.mesh import AnyMesh
from emojax.parallel.rules import DEFAULT_RULES, _is_names, _is_shape, logical_axes, param_specs
from emojax.params import param_shapes

# bf16 peak FLOP/s, HBM bytes per chip, chips per host and on-demand US$/chip-hour (list
# prices at the time of writing, us-central regions; check current pricing before a big run).
TPU_SPECS: dict[str, dict[str, float | None]] = {
    "v5e": {"flops": 197e12, "hbm": 16 * 2**30, "chips_per_host": 4, "usd_hour": 1.20},
    "v5p": {"flops": 459e12, "hbm": 95 * 2**30, "chips_per_host": 4, "usd_hour": 4.20},
    "v6e": {"flops": 918e12, "hbm": 32 * 2**30, "chips_per_host": 4, "usd_hour": 2.70},
}
# NVIDIA GPUs, SXM boards in 8-GPU HGX hosts. FLOP/s: the datasheets' dense bf16 Tensor Core
# peak (half the "with sparsity" figure): H100 SXM 989 TFLOP/s, H200 the same H100 die (989),
# A100 312. Memory: the total nvidia-smi reports (H100 80GB 81559 MiB, H200 141GB 143771 MiB,
# A100 80GB 81920 MiB), of which the CUDA context and XLA's reservation take a few GiB. No
# price: GPU rental prices vary too much between providers to list one.
GPU_SPECS: dict[str, dict[str, float | None]] = {
    "h100": {"flops": 989e12, "hbm": 81559 * 2**20, "chips_per_host": 8, "usd_hour": None},
    "h200": {"flops": 989e12, "hbm": 143771 * 2**20, "chips_per_host": 8, "usd_hour": None},
    "a100": {"flops": 312e12, "hbm": 81920 * 2**20, "chips_per_host": 8, "usd_hour": None},
}
CHIP_SPECS: dict[str, dict[str, float | None]] = {**TPU_SPECS, **GPU_SPECS}


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
    # HuggingFaceTB/SmolLM2-135M(-Instruct); the GGUF of `emojax.models` has the same shapes.
    "smollm2-135m": dict(
        model_type="llama",
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
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


# The architecture of each registered model (`emojax.models`), planned without its weights.
REGISTERED_ARCHITECTURES: dict[str, str] = {
    "smollm2-135m-instruct": "smollm2-135m",
    "smollm2-135m-safety": "smollm2-135m",  # a fine-tune of the instruct model: same shapes
}


def _local_config(path: str) -> ModelConfig | None:
    """The config of a checkpoint directory or a GGUF file (its metadata), else None."""
    from emojax import gguf

    if os.path.isfile(os.path.join(path, "config.json")):
        return ModelConfig.from_pretrained(path)
    if os.path.exists(path) and gguf.is_gguf(path):
        path = gguf.find_gguf(path)
        return gguf.config_from_reader(gguf.open_reader(path), path)
    return None


def reference_config(name_or_path: str) -> ModelConfig:
    """ModelConfig of a checkpoint directory or GGUF file, a registered model, or a known
    model by (hub) name. Nothing is downloaded or built.

    A registered name (`emojax.models`) reads the config of its cached file when it has been
    fetched (or built), else `REGISTERED_ARCHITECTURES`. `meta-llama/Llama-3.1-70B-Instruct`,
    `llama-3.1-70b` and `Llama-3.1-70B` all name the same architecture (fine-tunes share
    their base's shapes).

    Raises:
      ValueError: none of these; the message lists the known and registered names.
    """
    from emojax import models

    if (local := _local_config(name_or_path)) is not None:
        return local
    if models.is_registered(name_or_path):
        if (cached := _local_config(str(models.model_path(name_or_path)))) is not None:
            return cached
        if name_or_path in REGISTERED_ARCHITECTURES:
            return ModelConfig.from_hf_dict(
                REFERENCE_HF_CONFIGS[REGISTERED_ARCHITECTURES[name_or_path]]
            )
    key = name_or_path.rstrip("/").split("/")[-1].lower()
    for suffix in ("-instruct", "-it", "-chat"):
        key = key.removesuffix(suffix)
    if key not in REFERENCE_HF_CONFIGS:
        registered = sorted({*models.REGISTRY, *models.BUILT})
        raise ValueError(
            f"{name_or_path!r} is neither a checkpoint directory, a GGUF file, a registered "
            f"model ({', '.join(registered)}) nor a known architecture "
            f"({', '.join(REFERENCE_HF_CONFIGS)})"
        )
    return ModelConfig.from_hf_dict(REFERENCE_HF_CONFIGS[key])
