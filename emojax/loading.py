"""Loading a model: picks the adapter for what `path` names and returns a `Model`.

A checkpoint directory in Hugging Face layout (`config.json` + safetensors files, read by
`emojax.safetensors_files`), a llama.cpp `.gguf` file (`emojax.gguf`), or a registered model
name (`emojax.models`, fetched or built on first use, then one of the two). The adapters hand
(Hugging Face name, array) pairs to `emojax.checkpoint`, which holds the one name map per
family and every transpose; they do not import this module. Loading needs no torch; the
tokenizer comes from `transformers.AutoTokenizer`.

The names of `emojax.checkpoint` and `emojax.safetensors_files` that callers import from here
(`CheckpointError`, `Model`, `tensor_map`, `params_from_tensors`, `checkpoint_files`, ...)
stay importable from here.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp

from emojax import gguf, models
from emojax.checkpoint import CheckpointError as CheckpointError
from emojax.checkpoint import Model as Model
from emojax.checkpoint import TensorSpec as TensorSpec
from emojax.checkpoint import canonical_name as canonical_name
from emojax.checkpoint import check_tensor_headers, params_from_tensors, to_hf_tensors
from emojax.checkpoint import is_ignored as is_ignored
from emojax.checkpoint import tensor_map as tensor_map
from emojax.config import ModelConfig
from emojax.params import Params
from emojax.safetensors_files import checkpoint_files as checkpoint_files
from emojax.safetensors_files import iter_tensors, tensor_headers
from emojax.safetensors_files import open_safetensors as open_safetensors


def validate_checkpoint(path: str) -> ModelConfig:
    """Resolves a checkpoint and checks it can be loaded, without reading a weight.

    Reads `config.json` and the safetensors headers (or a GGUF file's header) and checks every
    tensor's name, shape and dtype against the config, as `load_model` would: seconds even
    for 70B models, so a run can check every checkpoint before any work.

    Args:
      path: anything `load_model` accepts.

    Returns:
      The checkpoint's `ModelConfig`.

    Raises:
      FileNotFoundError: no such directory, file or cached model id; no config.json.
      ConfigError: config.json is invalid (naming the file) or unsupported.
      CheckpointError: a missing, unexpected, misshapen or integer tensor, a missing shard,
        or a corrupt or truncated weight file (naming it).
    """
    path = resolve_path(path)
    if gguf.is_gguf(path):
        file = gguf.find_gguf(path)
        return gguf.config_from_reader(gguf.open_reader(file), file)
    config = ModelConfig.from_pretrained(path)
    check_tensor_headers(tensor_headers(path), config, source=path)
    return config


def save_pretrained(params: Params, config: ModelConfig, path: str) -> None:
    """Writes `config.json` and `model.safetensors` in Hugging Face layout (float32).

    Tokenizer files are the caller's job.
    """
    from safetensors.numpy import save_file

    os.makedirs(path, exist_ok=True)
    hf = dict(config.to_hf_dict())
    hf.setdefault("torch_dtype", "float32")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
    save_file(to_hf_tensors(params, config), os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip


def resolve_path(path: str) -> str:
    """A local checkpoint directory or `.gguf` file, a registered model name (`emojax.models`,
    fetched on first use), or a model id already in the local Hugging Face cache.

    Raises:
      FileNotFoundError: none of these; the message lists the registered names and how to
        point at a local checkpoint directory or `.gguf` file.
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path) or (os.path.isfile(path) and path.endswith(".gguf")):
        return path
    if os.path.exists(path):
        raise FileNotFoundError(f"{path} is a file, not a checkpoint directory or .gguf file")
    if models.is_registered(path):
        return models.ensure_model(path)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not available offline"
        raise FileNotFoundError(
            f"{path!r} is neither a local checkpoint directory nor a .gguf file, a registered "
            f"model name ({', '.join(models.registered_names())}) or a model id in the local "
            f"Hugging Face cache ({type(e).__name__}). To load a local checkpoint, pass its "
            "path: a directory holding config.json and *.safetensors files (Hugging Face "
            "layout), or a llama.cpp .gguf file (e.g. emojax.load_model('/models/x.Q8_0.gguf')); "
            "registered names are fetched on first use, Hugging Face ids are read from the "
            "local cache only (`huggingface-cli download <id>` puts one there)"
        ) from None


def load_tokenizer(path: str):
    """The checkpoint's tokenizer (with its chat template) via transformers, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_params(path: str, *, dtype=jnp.float32) -> tuple[ModelConfig, Params]:
    """Reads config.json and the safetensors weights of a checkpoint directory."""
    path = resolve_path(path)
    if gguf.is_gguf(path):
        return gguf.load_gguf_params(path, dtype=dtype)
    config = ModelConfig.from_pretrained(path)
    return config, params_from_tensors(iter_tensors(path), config, dtype, source=path)


def load_model(path: str, *, dtype=jnp.float32, tokenizer: bool = True) -> Model:
    """Loads a Hugging Face checkpoint for emojax.

    Args:
      path: a local checkpoint directory, a `.gguf` file (or a directory holding one and no
        config.json), a registered model name (`emojax.models`, e.g. "smollm2-135m-instruct"),
        or a model id present in the local HF cache.
      dtype: parameter dtype (jnp.float32 or jnp.bfloat16).
      tokenizer: also load the tokenizer (needs tokenizer files in the directory, or
        tokenizer metadata in the GGUF file).

    Returns:
      A `Model` with `.config`, `.params` and `.tokenizer` (None when tokenizer=False or the
      directory has no tokenizer files).

    Raises:
      FileNotFoundError: no such directory / cached model, or no config.json; a registered
        model that is not cached and cannot be fetched (`emojax.models.ModelFetchError`).
      ConfigError: unsupported model_type or architecture field.
      CheckpointError: a missing, unexpected or misshapen tensor (`emojax.gguf.GGUFError` for
        GGUF files: also unsupported architecture or tensor type, or a truncated file).
    """
    path = resolve_path(path)
    if gguf.is_gguf(path):
        return gguf.load_gguf_model(path, dtype=dtype, tokenizer=tokenizer)
    config, params = load_params(path, dtype=dtype)
    tok = None
    if tokenizer and any(
        os.path.isfile(os.path.join(path, f))
        for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    ):
        tok = load_tokenizer(path)
    return Model(config=config, params=params, tokenizer=tok, path=path)
