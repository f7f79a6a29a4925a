"""`ModelConfig`: every architectural choice of a checkpoint, read from its `config.json`.

Model-family differences are data here, never branches scattered through the forward pass:
the forward pass reads `norm_type`, `gated_mlp`, `qk_norm`, `post_norms`, soft-capping values
and so on. The config is frozen and hashable so it can be a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gpt2")

_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_python": "gelu",
    "relu": "relu",
}


class ConfigError(ValueError):
    """A checkpoint's config.json cannot be turned into a ModelConfig."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static description of a decoder-only transformer.

    Attributes:
      model_type: Hugging Face `model_type` (one of `SUPPORTED_MODEL_TYPES`).
      vocab_size: V.
      d_model: D, the residual-stream width.
      num_layers: L.
      num_heads: H, query heads.
      num_kv_heads: G, key/value heads (G divides H; G < H is grouped-query attention).
      head_dim: K.
      d_ff: F, MLP hidden width.
      max_position_embeddings: longest position the checkpoint was trained for.
      norm_type: "rms" or "layer".
      norm_eps: epsilon of every norm.
      norm_offset: Gemma stores RMSNorm weights as offsets from 1 (`x * (1 + w)`).
      activation: "silu", "gelu", "gelu_tanh" or "relu".
      gated_mlp: `down(act(gate(x)) * up(x))` when True, `down(act(up(x)))` otherwise.
      positional: "rope" or "learned".
      rope_theta: rotary base frequency.
      rope_scaling: rotary scaling parameters as sorted `(key, value)` pairs (hashable).
      qkv_bias: q/k/v projections carry a bias.
      out_bias: attention output projection carries a bias.
      mlp_bias: MLP projections carry biases.
      qk_norm: RMSNorm over the head dimension of queries and keys (Qwen3).
      post_norms: norms on attention and MLP outputs before they join the residual (Gemma 2).
      query_scale: multiplier of q·k (1/sqrt(K), or 1/sqrt(query_pre_attn_scalar)).
      attn_softcap: `cap * tanh(scores / cap)` on attention scores (Gemma 2), or None.
      final_softcap: the same on the final logits, or None.
      sliding_window: window of sliding-window layers, or None.
      sliding_layers: per layer, True where attention is windowed.
      embed_scale: embeddings are multiplied by this (sqrt(D) for Gemma).
      tie_embeddings: the unembedding is the transposed embedding.
      bos_token_id: beginning-of-sequence id, or None.
      eos_token_id: end-of-sequence id(s) as a tuple.
      pad_token_id: padding id, or None.
    """

    model_type: str
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    d_ff: int
    max_position_embeddings: int = 2048
    norm_type: str = "rms"
    norm_eps: float = 1e-6
    norm_offset: bool = False
    activation: str = "silu"
    gated_mlp: bool = True
    positional: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    query_scale: float = 1.0
    attn_softcap: float | None = None
    final_softcap: float | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] = ()
    embed_scale: float = 1.0
    tie_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    hf_config: tuple[tuple[str, Any], ...] = dataclasses.field(default=(), compare=False)

    @property
    def has_norm_bias(self) -> bool:
        return self.norm_type == "layer"

    @property
    def num_params(self) -> int:
        """Parameter count implied by the config (embedding counted once when tied)."""
        d, k, f = self.d_model, self.head_dim, self.d_ff
        attn = d * k * (self.num_heads * 2 + self.num_kv_heads * 2)
        if self.qkv_bias:
            attn += k * (self.num_heads + 2 * self.num_kv_heads)
        if self.out_bias:
            attn += d
        mlp = d * f * (3 if self.gated_mlp else 2) + ((f + d) if self.mlp_bias else 0)
        norms = (4 if self.post_norms else 2) * d * (2 if self.has_norm_bias else 1)
        norms += 2 * k if self.qk_norm else 0
        per_layer = attn + mlp + norms
        total = self.num_layers * per_layer + self.vocab_size * d + d
        total += d if self.has_norm_bias else 0
        total += 0 if self.tie_embeddings else self.vocab_size * d
        total += self.max_position_embeddings * d if self.positional == "learned" else 0
        return total

    def layer_index(self, layer: int) -> int:
        """Validates a layer index (negative counts from the end) and returns it."""
        if not -self.num_layers <= layer < self.num_layers:
            raise IndexError(
                f"layer {layer} is out of range for a model with {self.num_layers} layers"
            )
        return layer % self.num_layers

    def to_hf_dict(self) -> dict[str, Any]:
        """The Hugging Face config.json this config was read from (or one equivalent)."""
        if self.hf_config:
            return _unfreeze(self.hf_config)
        if self.model_type != "llama":
            raise ConfigError("to_hf_dict without a source config is only defined for llama")
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            rope.update(dict(self.rope_scaling))
        eos = list(self.eos_token_id)
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "intermediate_size": self.d_ff,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
        }

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Builds a ModelConfig from a Hugging Face `config.json` dictionary.

        Args:
          d: the parsed config.json.

        Returns:
          The ModelConfig.

        Raises:
          ConfigError: unsupported `model_type`, or a field the family needs is missing.
        """
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported model_type {model_type!r}; emojax supports "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        try:
            if model_type == "gpt2":
                kw = _gpt2_fields(d)
            else:
                kw = _rope_family_fields(d, model_type)
        except KeyError as e:
            raise ConfigError(f"config.json for {model_type!r} is missing field {e}") from None
        eos = d.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list | tuple) else (int(eos),)
        return cls(
            model_type=model_type,
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=d.get("pad_token_id"),
            hf_config=_freeze(d),
            **kw,
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ModelConfig:
        """Reads `config.json` from a checkpoint directory.

        Raises:
          FileNotFoundError: no config.json.
          ConfigError: (naming the file) invalid JSON or UTF-8, not a JSON object, or a
            config `from_hf_dict` rejects.
        """
        file = os.path.join(os.fspath(path), "config.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no config.json in checkpoint directory {path}")
        try:
            with open(file, encoding="utf-8") as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{file} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{file} holds a JSON {type(d).__name__}, not an object")
        try:
            return cls.from_hf_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None


def _rope_params(d: dict[str, Any]) -> tuple[float, tuple[tuple[str, Any], ...] | None]:
    """rope_theta and scaling from either transformers 4 or 5 config layouts."""
    params = dict(d.get("rope_parameters") or {})
    scaling = dict(d.get("rope_scaling") or {})
    theta = params.pop("rope_theta", d.get("rope_theta", 10000.0))
    scaling.update(params)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return float(theta), None
    if kind not in ("llama3", "linear"):
        raise ConfigError(f"unsupported rope scaling type {kind!r} (supported: llama3, linear)")
    scaling["rope_type"] = kind
    scaling.pop("type", None)
    return float(theta), tuple(sorted(scaling.items()))


def _rope_family_fields(d: dict[str, Any], model_type: str) -> dict[str, Any]:
    num_heads = d["num_attention_heads"]
    d_model = d["hidden_size"]
    num_layers = d["num_hidden_layers"]
    head_dim = d.get("head_dim") or d_model // num_heads
    theta, scaling = _rope_params(d)
    gemma = model_type in ("gemma", "gemma2")
    act = d.get("hidden_activation") or d.get("hidden_act") or "silu"
    if gemma and act == "gelu":  # Gemma checkpoints say "gelu" but were trained with tanh GELU.
        act = "gelu_pytorch_tanh"
    if act not in _ACTIVATIONS:
        raise ConfigError(f"unsupported activation {act!r}")
    window = d.get("sliding_window")
    layer_types = d.get("layer_types")
    if model_type in ("qwen2", "qwen3") and not d.get("use_sliding_window", False):
        window = None
    if window is None:
        sliding = (False,) * num_layers
    elif layer_types:
        sliding = tuple(t == "sliding_attention" for t in layer_types)
    elif model_type == "gemma2":
        sliding = tuple(i % 2 == 0 for i in range(num_layers))
    elif model_type in ("qwen2", "qwen3"):  # transformers: windowed from max_window_layers on
        first = d.get("max_window_layers", num_layers)
        sliding = tuple(i >= first for i in range(num_layers))
    else:
        sliding = (True,) * num_layers
    if not any(sliding):
        window = None
    if model_type == "gemma2":
        query_scale = d.get("query_pre_attn_scalar", head_dim) ** -0.5
    else:
        query_scale = head_dim**-0.5
    tie_default = gemma
    return dict(
        vocab_size=d["vocab_size"],
        d_model=d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=d.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        d_ff=d["intermediate_size"],
        max_position_embeddings=d.get("max_position_embeddings", 2048),
        norm_type="rms",
        norm_eps=d.get("rms_norm_eps", 1e-6),
        norm_offset=gemma,
        activation=_ACTIVATIONS[act],
        gated_mlp=True,
        positional="rope",
        rope_theta=theta,
        rope_scaling=scaling,
        qkv_bias=bool(d.get("attention_bias", model_type == "qwen2")),
        out_bias=bool(d.get("attention_bias", False)) and model_type != "qwen2",
        mlp_bias=bool(d.get("mlp_bias", False)),
        qk_norm=model_type == "qwen3",
        post_norms=model_type == "gemma2",
        query_scale=query_scale,
        attn_softcap=d.get("attn_logit_softcapping") if model_type == "gemma2" else None,
        final_softcap=d.get("final_logit_softcapping") if model_type == "gemma2" else None,
        sliding_window=window,
        sliding_layers=sliding,
        embed_scale=math.sqrt(d_model) if gemma else 1.0,
        tie_embeddings=bool(d.get("tie_word_embeddings", tie_default)),
    )


def _gpt2_fields(d: dict[str, Any]) -> dict[str, Any]:
    d_model = d["n_embd"]
    num_heads = d["n_head"]
    act = d.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise ConfigError(f"unsupported activation {act!r}")
    if d.get("scale_attn_by_inverse_layer_idx") or d.get("reorder_and_upcast_attn"):
        raise ConfigError("GPT-2 variants with scale_attn_by_inverse_layer_idx are unsupported")
    head_dim = d_model // num_heads
    return dict(
        vocab_size=d["vocab_size"],
        d_model=d_model,
        num_layers=d["n_layer"],
        num_heads=num_heads,
        num_kv_heads=num_heads,
        head_dim=head_dim,
        d_ff=d.get("n_inner") or 4 * d_model,
        max_position_embeddings=d["n_positions"],
        norm_type="layer",
        norm_eps=d.get("layer_norm_epsilon", 1e-5),
        activation=_ACTIVATIONS[act],
        gated_mlp=False,
        positional="learned",
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        query_scale=head_dim**-0.5 if d.get("scale_attn_weights", True) else 1.0,
        sliding_layers=(False,) * d["n_layer"],
        tie_embeddings=bool(d.get("tie_word_embeddings", True)),
    )


def _freeze(x: Any) -> Any:
    if isinstance(x, dict):
        return tuple((k, _freeze(v)) for k, v in x.items())
    if isinstance(x, list):
        return ("__list__", tuple(_freeze(v) for v in x))
    return x


def _unfreeze(x: Any) -> Any:
    if isinstance(x, tuple) and len(x) == 2 and x[0] == "__list__":
        return [_unfreeze(v) for v in x[1]]
    if isinstance(x, tuple):
        return {k: _unfreeze(v) for k, v in x}
    return x
