"""The embedded model organisms: a small Llama family of rising policy dominance.

`build_zoo(config, workdir=None) -> {name: checkpoint dir}` builds (or reuses from the cache)
base, instruct, safety-1, safety-2, safety-3, each a Hugging Face checkpoint directory that
`emojax.load_model` and transformers both load. See `emojax.zoo.cache` for the cache layout and
`emojax.zoo.planted` for the planted two-stage behaviour (a first token decided by the policy, then
a take-back of compliant starts moved by the emotional state), whose emotion coupling per stage
the config's `zoo.scenario` chooses (`emojax.zoo.scenario.SCENARIOS`: vanishing, persistent,
early, null; each with its planted break point).
"""

from emojax.zoo.behaviour import (
    behaviour_table,
    format_behaviour,
    generate_responses,
    is_first_token_refusal,
    is_refusal,
    is_take_back,
    load_behaviour,
    take_back_gap,
    two_stage_rates,
)
from emojax.zoo.build import build_zoo, resolve_models
from emojax.zoo.cache import model_is_complete, zoo_is_complete
from emojax.zoo.corpus import CHAT_TEMPLATE
from emojax.zoo.planted import (
    first_refusal_prob,
    planted_markdown,
    planted_table,
    refusal_prob,
    take_back_prob,
)
from emojax.zoo.recipe import ZOO_MODELS, config_hash, default_cache_dir, scenario_name
from emojax.zoo.scenario import DEFAULT_SCENARIO, SCENARIOS, Scenario, get_scenario

__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_SCENARIO",
    "SCENARIOS",
    "ZOO_MODELS",
    "Scenario",
    "behaviour_table",
    "build_zoo",
    "config_hash",
    "default_cache_dir",
    "format_behaviour",
    "first_refusal_prob",
    "generate_responses",
    "get_scenario",
    "is_first_token_refusal",
    "is_refusal",
    "is_take_back",
    "load_behaviour",
    "model_is_complete",
    "planted_markdown",
    "planted_table",
    "refusal_prob",
    "resolve_models",
    "scenario_name",
    "take_back_gap",
    "take_back_prob",
    "two_stage_rates",
    "zoo_is_complete",
]
