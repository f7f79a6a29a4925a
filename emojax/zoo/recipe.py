"""What a zoo config builds: its hash and cache directory, the model, each stage's training.

`config_hash` (12 hex digits over ZOO_VERSION and the `zoo` section, cache location ignored)
names the cache directory (`default_cache_dir`), so a config builds the same zoo wherever it
is cached and every scenario (`zoo.scenario`, part of the hash) builds to its own directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from emojax.config import ModelConfig
from emojax.zoo import corpus
from emojax.zoo.scenario import get_scenario
from emojax.zoo.train import StageSpec

ZOO_VERSION = "4"  # bump when the corpus / training code changes what a config builds
ZOO_MODELS: tuple[str, ...] = corpus.STAGES


def zoo_section(config: Any) -> Any:
    """The `zoo` section of a full config (or the section itself)."""
    return config.zoo if hasattr(config, "zoo") else config


def _plain(x: Any) -> Any:
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in sorted(x.items())}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def config_hash(config: Any) -> str:
    """12 hex digits identifying what a zoo config builds (cache location ignored)."""
    z = _plain(zoo_section(config))
    z.pop("cache_dir", None)
    blob = json.dumps({"version": ZOO_VERSION, "zoo": z}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache_dir(config: Any) -> Path:
    """~/.cache/emojax/zoo/<hash> (zoo.cache_dir or $EMOJAX_CACHE moves the root)."""
    z = zoo_section(config)
    root = getattr(z, "cache_dir", "") or os.path.join(
        os.environ.get("EMOJAX_CACHE", "~/.cache/emojax"), "zoo"
    )
    return Path(root).expanduser() / config_hash(config)


def model_config(z: Any, vocab_size: int) -> ModelConfig:
    """The zoo's Llama config, through the Hugging Face config.json route."""
    return ModelConfig.from_hf_dict(
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": z.d_model,
            "intermediate_size": z.d_ff,
            "num_hidden_layers": z.num_layers,
            "num_attention_heads": z.num_heads,
            "num_key_value_heads": z.num_kv_heads,
            "head_dim": z.d_model // z.num_heads,
            "hidden_act": "silu",
            "max_position_embeddings": z.max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": bool(z.tie_embeddings),
            "bos_token_id": 2,
            "eos_token_id": 3,
            "pad_token_id": 0,
            "torch_dtype": "float32",
        }
    )


def scenario_name(config: Any) -> str:
    """The zoo scenario of a config (`zoo.scenario`; the default when the key is absent)."""
    z = zoo_section(config)
    name = z.get("scenario", None) if hasattr(z, "get") else getattr(z, "scenario", None)
    return get_scenario(name).name


def stage_spec(z: Any, name: str) -> StageSpec:
    """Training hyperparameters of one stage from the zoo config."""
    if name == "base":
        steps, lr = z.base_steps, z.base_lr
    elif name == "instruct":
        steps, lr = z.instruct_steps, z.finetune_lr
    else:
        steps, lr = z.safety_steps[int(name.split("-")[1]) - 1], z.finetune_lr
    return StageSpec(
        name=name,
        steps=int(steps),
        learning_rate=float(lr),
        warmup_steps=int(min(z.warmup_steps, max(1, steps // 5))),
        batch_size=int(z.batch_size),
        weight_decay=float(z.weight_decay),
        log_every=int(z.log_every),
    )


def corpus_size(z: Any, name: str) -> int:
    """Documents in the corpus of stage `name` (base_docs, instruct_docs or safety_docs)."""
    if name == "base":
        return int(z.base_docs)
    return int(z.instruct_docs if name == "instruct" else z.safety_docs)
