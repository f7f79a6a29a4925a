"""The refusal site search (Arditi et al. 2024): the layer chosen by its causal effect.

Each candidate site's harmful-minus-harmless direction is ablated everywhere on harmful prompts
(bypass) and added at its layer on harmless prompts (induce), all candidates in one program.

Dimension legend: B batch, T time, D model, L residual sites.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emojax.extract.methods import _unit

Array = jax.Array


@dataclasses.dataclass
class RefusalSelection:
    """Per-candidate-layer effects of the refusal direction and the chosen layer.

    Attributes:
      layer: chosen layer.
      bypass: [L] mean refusal score on harmful prompts with the layer's direction ablated
        everywhere (lower = stronger); NaN for excluded layers.
      induce: [L] mean refusal score on harmless prompts with the direction added at its
        layer; NaN for excluded layers.
      baseline_harmful: mean refusal score on harmful prompts without intervention.
      baseline_harmless: same on harmless prompts.
    """

    layer: int
    bypass: np.ndarray
    induce: np.ndarray
    baseline_harmful: float
    baseline_harmless: float


def _refusal_score(params, config, tokens, mask, refusal, iv) -> Array:
    """Mean refusal score at the first response position of left-padded prompts."""
    from emojax.model import forward
    from emojax.readouts import refusal_score

    positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0).astype(jnp.int32)
    last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)
    out = forward(params, config, tokens, attention_mask=mask, positions=positions,
                  intervention=iv, logit_positions=last, capture=False)  # fmt: skip
    return jnp.mean(refusal_score(out.logits[:, 0], refusal))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _refusal_effects(params, config, n_cand, refusal, vecs, h_tok, h_mask, s_tok, s_mask):
    """Ablation (harmful) and addition (harmless) refusal scores of candidate sites < n_cand."""
    from emojax.interventions import Intervention

    def one(layer):
        v = vecs[layer]
        ablate = Intervention.ablate(config, _unit(v))
        add = Intervention.steer(config, jax.nn.one_hot(layer, config.num_layers), v, 1.0)
        return (_refusal_score(params, config, h_tok, h_mask, refusal, ablate),
                _refusal_score(params, config, s_tok, s_mask, refusal, add))  # fmt: skip

    bypass, induce = jax.lax.map(one, jnp.arange(n_cand))
    base = Intervention.none(config)
    return (bypass, induce, _refusal_score(params, config, h_tok, h_mask, refusal, base),
            _refusal_score(params, config, s_tok, s_mask, refusal, base))  # fmt: skip


def select_refusal_layer(
    params,
    config,
    vectors: Array,
    harmful: tuple[Array, Array],
    harmless: tuple[Array, Array],
    refusal_ids: Sequence[int],
    *,
    exclude_last_fraction: float = 0.2,
) -> RefusalSelection:
    """Picks the refusal layer: the candidate whose ablation lowers refusal most on harmful
    prompts, among those whose addition raises refusal on harmless prompts (Arditi et al.;
    sites with an all-zero vector are never chosen);
    the last `exclude_last_fraction` of the residual sites are never candidates (nor the
    output of the last layer, where nothing can be added).

    Args:
      params: model parameters.
      config: ModelConfig.
      vectors: [L, D] harmful-minus-harmless mean per residual site (unnormalised), L =
        num_layers + 1.
      harmful: `(tokens [B, T], mask [B, T])`, left padded.
      harmless: `(tokens [B, T], mask [B, T])`, left padded.
      refusal_ids: token ids that start a refusal.
      exclude_last_fraction: fraction of the deepest layers excluded.
    """
    from emojax import validate
    from emojax.readouts import refusal_mask

    validate.refusal_inputs(config, vectors, harmful, harmless, refusal_ids)
    nl = config.num_layers
    n_cand = max(1, min(int(np.floor((nl + 1) * (1 - exclude_last_fraction))), nl))
    refusal = refusal_mask(np.asarray(refusal_ids), config.vocab_size)
    bypass, induce, b_h, b_s = jax.device_get(
        _refusal_effects(params, config, n_cand, refusal, jnp.asarray(vectors), *harmful, *harmless)
    )
    ok = (induce > b_s) & (np.linalg.norm(np.asarray(vectors)[:n_cand], axis=-1) > 0)
    layer = int(np.argmin(np.where(ok, bypass, np.inf)) if ok.any() else np.argmin(bypass))
    pad = np.full(vectors.shape[0] - n_cand, np.nan, np.float32)
    return RefusalSelection(
        layer, np.concatenate([bypass, pad]), np.concatenate([induce, pad]), float(b_h), float(b_s)
    )
