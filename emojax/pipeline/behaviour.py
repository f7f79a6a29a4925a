"""The unsteered model's own behaviour: greedy responses, refusal scores and last-token features.

Dimension legend: B batch, T time, N prompts, L layers (L+1 residual sites), D model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax import readouts as ro
from emojax.generate import decode_tokens, generate
from emojax.interventions import Intervention
from emojax.loading import Model
from emojax.model import default_positions, embed, forward, init_cache, run_layers, unembed
from emojax.pipeline.progress import stage
from emojax.stats import require_finite


@functools.partial(jax.jit, static_argnames=("config",))
def _last_token_pass(params, config, tokens, mask, refusal):
    """Residual at the last prompt token [B, L+1, D] (float32) and the refusal score [B]."""
    last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)
    out = forward(params, config, tokens, attention_mask=mask, logit_positions=last)
    acts = jnp.swapaxes(out.resid[:, :, -1].astype(jnp.float32), 0, 1)
    return acts, ro.refusal_score(out.logits[:, 0], refusal)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def _behaviour_pass(params, config, tokens, mask, refusal, max_new_tokens: int):
    """One prefill serving the features and the greedy response of left-padded prompts.

    The prefill captures every layer's input and fills the KV cache; the last prompt
    position gives the residual features and the refusal score, its greedy token opens
    the response, and cached decoding continues it (`emojax.generate` does the same
    prefill and decoding, without the capture).

    Returns:
      acts [B, L+1, D] float32 at the last prompt token, refusal score [B], and the
      response ids int32 [B, max_new_tokens].
    """
    b, t = tokens.shape
    mask = mask.astype(jnp.int32)
    iv = Intervention.none(config)
    cache = init_cache(config, b, t + max_new_tokens, params.embed.dtype)
    k_valid = jnp.concatenate([mask, jnp.ones((b, max_new_tokens), jnp.int32)], 1).astype(bool)
    positions = default_positions(tokens, mask)
    h, captured, cache = run_layers(
        params, config, embed(params, config, tokens, positions), positions=positions,
        q_slots=jnp.arange(t), k_valid=k_valid, intervention=iv,
        weights=iv.position_weights(b, t), capture=True, cache=cache, cache_slot=0,
        out_index=jnp.full((b, 1), t - 1),
    )  # fmt: skip
    last = h[:, -1]
    acts = jnp.concatenate([captured[:, :, -1], last[None]], axis=0)  # [L+1, B, D]
    logits = unembed(params, config, last)
    greedy = lambda lg, key: jnp.argmax(lg, axis=-1).astype(jnp.int32)
    ids = decode_tokens(
        params, config, greedy(logits, None), positions[:, -1] + 1, cache, k_valid=k_valid,
        intervention=iv, weights=iv.position_weights(b, 1, new_tokens=True), start_slot=t,
        num_steps=max_new_tokens - 1, pick=greedy,
    )  # fmt: skip
    acts = jnp.swapaxes(acts.astype(jnp.float32), 0, 1)
    return acts, ro.refusal_score(logits, refusal), ids


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    pad = np.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad]) if len(pad) else x


def classifier(cfg) -> Callable[[str], bool]:
    """The refusal classifier of a run: `readouts.classifier` ('english' when absent)."""
    return ro.response_classifier(cfg.get("readouts", {}).get("classifier", "english"))


def _length_blocks(mask: np.ndarray, bs: int, multiple: int) -> list[tuple[np.ndarray, int]]:
    """Blocks of `bs` prompt indices by real length, each with its trimmed padded length.

    Prompts are sorted by real length (stable) and cut into blocks of `bs`; a block's left
    padding is trimmed to its longest prompt, rounded up to `multiple` (few compiles).
    Trimming columns that are padding in every row leaves each row's positions and
    attention unchanged (positions count real tokens).
    """
    n, t = mask.shape
    length = mask.sum(axis=1).astype(np.int64)
    order = np.argsort(length, kind="stable")
    out = []
    for start in range(0, n, bs):
        idx = order[start : start + bs]
        width = min(t, -(-int(length[idx].max()) // multiple) * multiple)
        out.append((idx, width))
    return out


@stage("behaviour")
def unsteered_behaviour(model: Model, prompts, cfg) -> dict[str, Any]:
    """The unsteered model's own behaviour and last-token features on `prompts`.

    With `probes.length_multiple` > 0 (the real-model path: long, varied prompts) prompts are
    batched by length, each batch's left padding is trimmed to a multiple of it, and one
    prefill per batch serves the features and the response (`_behaviour_pass`). By default
    (0) every batch keeps the full padded length and the features come from a separate
    forward pass, as before.

    Returns:
      acts [N, L+1, D], policy_logit [N] (refusal score), texts, and the behaviour labels of
      `emojax.readouts.behaviour_labels` with the run's classifier (`classifier(cfg)`):
      refused, harmful_compliance, over_refusal (the two failure types stay separate).
    """
    mcfg, tok, p = model.config, model.tokenizer, cfg.probes
    refusal = ro.refusal_mask(np.asarray(ro.refusal_token_ids(tok)), mcfg.vocab_size)
    eos = tuple(mcfg.eos_token_id) or (tok.eos_token_id,)
    n, t = prompts.tokens.shape
    bs = min(p.batch_size, n)  # one block size (last block padded): one compile per width
    multiple = int(p.get("length_multiple", 0) or 0)
    if multiple:
        blocks = _length_blocks(prompts.mask, bs, multiple)
    else:
        blocks = [(np.arange(s, min(s + bs, n)), t) for s in range(0, n, bs)]
    acts = np.zeros((n, mcfg.num_layers + 1, mcfg.d_model), np.float32)
    logit, texts = np.zeros(n, np.float32), [""] * n
    for idx, width in blocks:
        k = len(idx)
        tokens = jnp.asarray(_pad_rows(prompts.tokens[idx, t - width :], bs))
        mask = jnp.asarray(_pad_rows(prompts.mask[idx, t - width :], bs))
        mask = mask.at[k:, -1].set(1)  # padded rows: one real token keeps them finite
        if multiple:
            a, s, ids = _behaviour_pass(model.params, mcfg, tokens, mask, refusal,
                                        p.max_new_tokens)  # fmt: skip
        else:
            a, s = _last_token_pass(model.params, mcfg, tokens, mask, refusal)
            ids = generate(
                model.params, mcfg, tokens, max_new_tokens=p.max_new_tokens, attention_mask=mask
            )[:, width:]
        acts[idx] = np.asarray(a)[:k]
        logit[idx] = np.asarray(s)[:k]
        for i, text in zip(idx, ro.decode_responses(tok, np.asarray(ids)[:k], eos),
                           strict=True):  # fmt: skip
            texts[i] = text
    labels = ro.behaviour_labels(texts, prompts.harmful, classifier(cfg))
    require_finite(acts, f"last-token activations of {model.path or 'model'}")
    return {"acts": acts, "policy_logit": logit, "texts": texts, **labels}
