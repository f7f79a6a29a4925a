"""GGUF files (llama.cpp's format) -> `ModelConfig`, `Params` and tokenizer.

Dimension legend: L layers, D model width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary.

Tensors are dequantized to float32 with the `gguf` package (every type it can dequantize in
numpy: F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0, the K-quants, ...), renamed to their Hugging
Face names, and handed to `emojax.checkpoint.params_from_tensors`, so GGUF and safetensors
checkpoints share one layout map and one set of shape checks. The config is built as a
Hugging Face `config.json` dictionary from the GGUF metadata and read by
`ModelConfig.from_hf_dict`; tokenizer and chat template come from the `tokenizer.*`
metadata through transformers' GGUF tokenizer converter.

Conventions of llama.cpp's converter (`convert_hf_to_gguf.py`, which writes these files):

* Names: `token_embd`, `output_norm`, `output` (absent when tied), and per block
  `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
  ffn_down}`; Gemma 2 also has `post_attention_norm` and `post_ffw_norm`, and its
  `ffn_norm` is HF's `pre_feedforward_layernorm` (gguf-py `tensor_mapping.py`).
* Layout: GGUF lists dimensions innermost first, so a linear weight GGUF `[in, out]` reads
  as numpy `[out, in]`, PyTorch's `nn.Linear` layout.
* Q/K permutation: `LlamaModel.modify_tensors` permutes the rows (and biases) of
  `q_proj`/`k_proj` with `LlamaModel.permute`, because llama.cpp rotates adjacent pairs
  for the `llama` architecture; `Qwen2Model` and `Gemma2Model` keep HF's half-split rotary
  and store the rows unpermuted. `_unpermute` inverts it for `llama` files only.
* Gemma norms: `Gemma2Model.modify_tensors` stores every `norm.weight` as `1 + w`; emojax
  keeps Gemma's offset-from-1 convention, so 1 is subtracted back.
* Gemma 2's `query_pre_attn_scalar` is not stored: llama.cpp uses `n_embd / n_head` for
  the 46-layer 27B model and the head dim for every other size; so does this reader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np

from emojax.checkpoint import CheckpointError, Model, hf_shape, params_from_tensors, tensor_map
from emojax.config import ModelConfig
from emojax.layers import rope_inv_freq
from emojax.params import Params, param_shapes

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gemma2")

# general.architecture -> the Hugging Face class transformers would build.
_HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
}


class GGUFError(CheckpointError):
    """A GGUF file cannot be read as a model: unsupported, incomplete, misshapen or truncated."""


# ---------------------------------------------------------------------------------------------
# finding and opening files


def is_gguf(path: str | os.PathLike) -> bool:
    """True for a `.gguf` file, or a directory with a `.gguf` file and no `config.json`."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path.endswith(".gguf")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        return any(n.endswith(".gguf") for n in os.listdir(path))
    return False


def find_gguf(path: str | os.PathLike) -> str:
    """The GGUF file `path` names: the file itself, or the only `.gguf` file of a directory.

    Raises:
      FileNotFoundError: no such file, or a directory without exactly one `.gguf` file.
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no GGUF file or directory at {path}")
    files = sorted(n for n in os.listdir(path) if n.endswith(".gguf"))
    if len(files) != 1:
        what = "no .gguf file" if not files else f"{len(files)} .gguf files ({', '.join(files)})"
        raise FileNotFoundError(f"{path} holds {what}; name the file to load")
    return os.path.join(path, files[0])


def open_reader(path: str):
    """A `gguf.GGUFReader` over `path`, with truncated or foreign files reported as such.

    Raises:
      GGUFError: not a GGUF file, or the file ends before its header or tensor data do.
    """
    import gguf

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise GGUFError(f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OverflowError) as e:
        raise GGUFError(
            f"{path} is truncated or corrupt ({size} bytes; the GGUF header or tensor table "
            f"could not be read: {e})"
        ) from None
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise GGUFError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}")
    return reader


def field_value(field) -> Any:
    """A metadata field as a Python value (str, int, float, bool or a list of those)."""
    import gguf

    types = field.types
    if types and types[0] == gguf.GGUFValueType.ARRAY:
        return [_scalar(field.parts[i], types[-1]) for i in field.data]
    return _scalar(field.parts[field.data[0]], types[0])


def _scalar(part, vtype) -> Any:
    import gguf

    if vtype == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    value = part.tolist()[0] if hasattr(part, "tolist") else part
    if vtype == gguf.GGUFValueType.BOOL:
        return bool(value)
    return value


def read_metadata(reader, *, skip_arrays_over: int = 1024) -> dict[str, Any]:
    """Every metadata key -> value (arrays longer than `skip_arrays_over` are left out)."""
    import gguf

    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
            if len(field.data) > skip_arrays_over:
                continue
        out[key] = field_value(field)
    return out


# ---------------------------------------------------------------------------------------------
# metadata -> config


def _require(meta: dict[str, Any], key: str, path: str) -> Any:
    if key not in meta:
        raise GGUFError(f"{path} has no metadata key {key!r}")
    return meta[key]


def hf_config_dict(meta: dict[str, Any], tensor_shapes: dict[str, tuple[int, ...]], path: str):
    """The Hugging Face `config.json` dictionary a GGUF file's metadata describes.

    Args:
      meta: the file's metadata (`read_metadata`).
      tensor_shapes: GGUF tensor name -> numpy shape (outermost dimension first).
      path: the file, for error messages.

    Raises:
      GGUFError: unsupported architecture or rope scaling, or a required key is missing.
    """
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"{path}: unsupported GGUF architecture {arch!r}; emojax reads "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    k = lambda name: f"{arch}.{name}"
    d_model = int(_require(meta, k("embedding_length"), path))
    heads = int(_require(meta, k("attention.head_count"), path))
    kv_heads = int(meta.get(k("attention.head_count_kv"), heads))
    head_dim = int(meta.get(k("attention.key_length"), d_model // heads))
    if int(meta.get(k("attention.value_length"), head_dim)) != head_dim:
        raise GGUFError(f"{path}: key_length != value_length is not supported")
    rope_dim = meta.get(k("rope.dimension_count"))
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise GGUFError(
            f"{path}: partial rotary embeddings (rope.dimension_count {rope_dim} < head dim "
            f"{head_dim}) are not supported"
        )
    if "token_embd.weight" not in tensor_shapes:
        raise GGUFError(f"{path}: missing tensor 'token_embd.weight'")
    vocab = int(meta.get(k("vocab_size"), tensor_shapes["token_embd.weight"][0]))
    num_layers = int(_require(meta, k("block_count"), path))
    names = set(tensor_shapes)
    d: dict[str, Any] = {
        "architectures": [_HF_ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": d_model,
        "intermediate_size": int(_require(meta, k("feed_forward_length"), path)),
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": int(meta.get(k("context_length"), 2048)),
        "rms_norm_eps": float(_require(meta, k("attention.layer_norm_rms_epsilon"), path)),
        "rope_theta": float(meta.get(k("rope.freq_base"), 10000.0)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }
    scaling = meta.get(k("rope.scaling.type"), "none")
    if scaling == "linear":
        d["rope_scaling"] = {"rope_type": "linear", "factor": float(meta[k("rope.scaling.factor")])}
    elif scaling not in ("none", None):
        raise GGUFError(f"{path}: unsupported rope scaling {scaling!r} (supported: linear)")
    if arch == "llama":
        d["hidden_act"] = "silu"
        d["attention_bias"] = "blk.0.attn_q.bias" in names
        d["mlp_bias"] = "blk.0.ffn_up.bias" in names
    elif arch == "qwen2":
        d["hidden_act"] = "silu"
        d["use_sliding_window"] = False
    elif arch == "gemma2":
        d["hidden_activation"] = "gelu_pytorch_tanh"
        # llama.cpp's defaults when the keys are absent (llama-model.cpp, LLM_ARCH_GEMMA2).
        d["attn_logit_softcapping"] = float(meta.get(k("attn_logit_softcapping"), 50.0))
        d["final_logit_softcapping"] = float(meta.get(k("final_logit_softcapping"), 30.0))
        d["sliding_window"] = int(meta.get(k("attention.sliding_window"), 4096))
        d["query_pre_attn_scalar"] = d_model // heads if num_layers == 46 else head_dim
    return d


def _llama3_scaling(rope_freqs: np.ndarray, d: dict[str, Any], path: str) -> dict[str, Any]:
    """Llama 3.x rope scaling whose per-frequency divisors are `rope_freqs` [K/2].

    The converter stores the divisors, not the parameters; they are matched against the
    Llama 3 rule with its published frequency factors (low 1, high 4), `factor` = the largest
    divisor and the original context length searched over powers of two.
    """
    want = rope_inv_freq(ModelConfig.from_hf_dict(d)) / rope_freqs
    for log2 in range(4, 21):
        scaling = {
            "rope_type": "llama3",
            "factor": float(rope_freqs.max()),
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 2**log2,
        }
        got = rope_inv_freq(ModelConfig.from_hf_dict({**d, "rope_scaling": scaling}))
        if np.allclose(got, want, rtol=1e-5, atol=0):
            return scaling
    raise GGUFError(
        f"{path}: tensor rope_freqs.weight matches no Llama 3 rope scaling (low_freq_factor 1, "
        "high_freq_factor 4, a power-of-two original context); unsupported"
    )


def config_from_reader(reader, path: str) -> ModelConfig:
    """The `ModelConfig` of an open GGUF file."""
    meta = read_metadata(reader)
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape)) for t in reader.tensors}
    d = hf_config_dict(meta, shapes, path)
    rope_freqs = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if rope_freqs is not None:
        d["rope_scaling"] = _llama3_scaling(_dequantize(rope_freqs, path), d, path)
    return ModelConfig.from_hf_dict(d)


# ---------------------------------------------------------------------------------------------
# tensors


def gguf_names(config: ModelConfig) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face tensor name, for every tensor the model needs."""
    block = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    if config.post_norms:  # Gemma 2
        block |= {
            "post_attention_norm": "post_attention_layernorm",
            "ffn_norm": "pre_feedforward_layernorm",
            "post_ffw_norm": "post_feedforward_layernorm",
        }
    else:
        block["ffn_norm"] = "post_attention_layernorm"
    hf_to_gguf = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    for i in range(config.num_layers):
        for g, h in block.items():
            for suffix in (".weight", ".bias"):
                hf_to_gguf[f"model.layers.{i}.{h}{suffix}"] = f"blk.{i}.{g}{suffix}"
    needed = tensor_map(config)
    return {g: h for h, g in hf_to_gguf.items() if h in needed}


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverts llama.cpp's `LlamaModel.permute` on rows [n_head * K, ...] (weights or biases).

    The converter maps each head's rows (first half, second half) to interleaved pairs;
    this reads the pairs back into halves.
    """
    k = w.shape[0] // n_head
    return w.reshape(n_head, k // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(tensor, path: str) -> np.ndarray:
    """float32 numpy array of a GGUF tensor, outermost dimension first."""
    import gguf

    try:
        w = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    except NotImplementedError:
        raise GGUFError(
            f"{path}: tensor {tensor.name!r} has type {tensor.tensor_type.name}, which the gguf "
            f"package (version {_gguf_version()}) cannot dequantize"
        ) from None
    shape = tuple(int(x) for x in reversed(tensor.shape))
    return np.asarray(w, np.float32).reshape(shape)


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def iter_hf_tensors(reader, config: ModelConfig, path: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (Hugging Face name, float32 array) for every tensor of an open GGUF file.

    Checks names and shapes against `config` first, so errors name the GGUF tensor.

    Raises:
      GGUFError: a missing, unexpected or misshapen tensor, or an unsupported tensor type.
    """
    names = gguf_names(config)
    present = {t.name: t for t in reader.tensors}
    ignored = {"rope_freqs.weight"}  # read into the config (Llama 3 rope scaling)
    unexpected = sorted(set(present) - set(names) - ignored)
    if unexpected:
        more = f" (and {len(unexpected) - 5} more)" if len(unexpected) > 5 else ""
        raise GGUFError(
            f"{path}: unexpected tensor(s) {', '.join(unexpected[:5])}{more} for a "
            f"{config.model_type} model with {config.num_layers} layers"
        )
    missing = sorted(set(names) - set(present), key=_natural)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise GGUFError(f"{path}: missing tensor(s) {', '.join(missing[:5])}{more}")
    spec, shapes = tensor_map(config), param_shapes(config)
    for g, h in names.items():
        want = hf_shape(spec[h], shapes)
        got = tuple(int(x) for x in reversed(present[g].shape))
        if got != want:
            raise GGUFError(
                f"{path}: tensor {g!r} has shape {got} (GGUF order {list(present[g].shape)}), "
                f"expected {want} (config: d_model={config.d_model}, heads={config.num_heads}, "
                f"kv_heads={config.num_kv_heads}, head_dim={config.head_dim}, "
                f"d_ff={config.d_ff}, vocab={config.vocab_size})"
            )
    permuted = config.model_type == "llama"
    for g, h in names.items():
        w = _dequantize(present[g], path)
        if permuted and ".attn_q." in g:
            w = _unpermute(w, config.num_heads)
        elif permuted and ".attn_k." in g:
            w = _unpermute(w, config.num_kv_heads)
        if config.norm_offset and g.endswith("norm.weight"):
            w = w - np.float32(1.0)
        yield h, w


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


# ---------------------------------------------------------------------------------------------
# public entry points


def load_gguf_params(path: str, *, dtype=jnp.float32) -> tuple[ModelConfig, Params]:
    """Reads the config and weights of a GGUF file (or a directory holding one).

    Args:
      path: a `.gguf` file or a directory with exactly one.
      dtype: parameter dtype (jnp.float32 or jnp.bfloat16).

    Returns:
      (config, params).

    Raises:
      GGUFError: see `open_reader`, `hf_config_dict`, `iter_hf_tensors`.
    """
    file = find_gguf(path)
    reader = open_reader(file)
    config = config_from_reader(reader, file)
    params = params_from_tensors(iter_hf_tensors(reader, config, file), config, dtype, file)
    return config, params


def load_gguf_tokenizer(path: str, *, reader=None):
    """The tokenizer (with its chat template) in a GGUF file's metadata, or None if it has none.

    Built by transformers' GGUF tokenizer converter from `tokenizer.ggml.*` and
    `tokenizer.chat_template`.
    """
    from transformers import AutoTokenizer

    file = find_gguf(path)
    reader = open_reader(file) if reader is None else reader
    if "tokenizer.ggml.model" not in reader.fields:
        return None
    folder, name = os.path.split(os.path.abspath(file))
    return AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)


def load_gguf_model(path: str, *, dtype=jnp.float32, tokenizer: bool = True) -> Model:
    """`emojax.load_model` for GGUF files: config, params and tokenizer from one file.

    Args:
      path: a `.gguf` file or a directory with exactly one.
      dtype: parameter dtype (jnp.float32 or jnp.bfloat16).
      tokenizer: also build the tokenizer (None when the file has no tokenizer metadata).

    Returns:
      A `Model` whose `path` is the GGUF file.
    """
    file = find_gguf(path)
    reader = open_reader(file)
    config = config_from_reader(reader, file)
    params = params_from_tensors(iter_hf_tensors(reader, config, file), config, dtype, file)
    tok = load_gguf_tokenizer(file, reader=reader) if tokenizer else None
    return Model(config=config, params=params, tokenizer=tok, path=file)
