"""The embedded model organisms: a small Llama family of rising policy dominance.

`build_zoo(config, workdir=None) -> {name: checkpoint dir}` builds (or reuses from the cache)
base, instruct, safety-1, safety-2, safety-3, each a Hugging Face checkpoint directory that
`emojax.load_model` and transformers both load. See `emojax.zoo.build` for the cache layout and
`emojax.zoo.corpus` for the planted emotion -> behaviour coupling.
"""

from emojax.zoo.build import (
    ZOO_MODELS,
    behaviour_table,
    build_zoo,
    config_hash,
    default_cache_dir,
    format_behaviour,
    generate_responses,
    is_refusal,
    load_behaviour,
    model_is_complete,
    resolve_models,
    zoo_is_complete,
)
from emojax.zoo.corpus import CHAT_TEMPLATE, planted_markdown, refusal_prob

__all__ = [
    "CHAT_TEMPLATE",
    "ZOO_MODELS",
    "behaviour_table",
    "build_zoo",
    "config_hash",
    "default_cache_dir",
    "format_behaviour",
    "generate_responses",
    "is_refusal",
    "load_behaviour",
    "model_is_complete",
    "planted_markdown",
    "refusal_prob",
    "resolve_models",
    "zoo_is_complete",
]
