"""emojax.generate against transformers greedy decoding, with and without left padding.

Every family generates from one left-padded batch (row 0 unpadded) that, with the new tokens,
runs past the Mistral and Gemma 2 sliding windows. Interventions during generation are checked
against PyTorch hooks: `positions=None` steers prompt and generated tokens, a position mask
steers the prompt only.

Dimension letters: B batch, T prompt time, N new tokens, D model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import (
    FAMILIES,
    ablated,
    decoder_layers,
    hf_greedy,
    hooks,
    left_pad_mask,
    random_tokens,
    random_unit,
    steered,
)

import emojax

B, T, N = 3, 8, 6
NUM_PAD = [0, 2, 5]


def _prompts(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    mask = left_pad_mask(B, T, NUM_PAD)
    tokens = np.where(mask == 1, random_tokens(B, T, seed=seed), 0).astype(np.int32)
    return tokens, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_transformers_left_padded(checkpoints, family):
    ck = checkpoints(family)
    tokens, mask = _prompts()
    ref = hf_greedy(ck.hf, tokens, mask, N)

    out = emojax.generate(
        ck.params,
        ck.config,
        jnp.asarray(tokens),
        max_new_tokens=N,
        attention_mask=mask,
        temperature=0.0,
        rng=jax.random.PRNGKey(0),  # the sampling test reuses this compile
    )

    out = np.asarray(out)
    assert out.shape == (B, T + N) and out.dtype == np.int32
    np.testing.assert_array_equal(out[:, :T], tokens)
    np.testing.assert_array_equal(out[:, T:], ref[:, T:], err_msg=f"{family} generated tokens")


@pytest.mark.parametrize("family", ["gemma2"])
def test_greedy_matches_transformers_unpadded(checkpoints, family):
    ck = checkpoints(family)
    tokens = random_tokens(2, T, seed=1)
    ref = hf_greedy(ck.hf, tokens, np.ones_like(tokens), N)

    out = emojax.generate(ck.params, ck.config, jnp.asarray(tokens), max_new_tokens=N)

    np.testing.assert_array_equal(np.asarray(out), ref, err_msg=f"{family} generated tokens")


def test_steering_applies_to_prompt_and_generated_tokens(checkpoints):
    ck = checkpoints("llama")
    tokens, mask = _prompts(seed=2)
    vector = random_unit(ck.config.d_model, seed=3)
    with steered(ck.hf, 1, vector, 4.0):  # the hook fires on the prefill and on every step
        ref = hf_greedy(ck.hf, tokens, mask, N)
    plain = hf_greedy(ck.hf, tokens, mask, N)
    assert (ref[:, T:] != plain[:, T:]).any(), "steering too weak to be tested"

    iv = emojax.Intervention.add(ck.config, 1, vector, coef=4.0)
    out = emojax.generate(
        ck.params,
        ck.config,
        jnp.asarray(tokens),
        max_new_tokens=N,
        attention_mask=mask,
        intervention=iv,
    )

    np.testing.assert_array_equal(np.asarray(out), ref)


def test_position_mask_steers_prompt_only(checkpoints):
    ck = checkpoints("llama")
    tokens, mask = _prompts(seed=2)
    vector = random_unit(ck.config.d_model, seed=3)
    positions = mask.astype(bool)
    delta = (
        4.0
        * torch.from_numpy(vector)[None, None]
        * torch.from_numpy(mask[..., None].astype(np.float32))
    )

    def prefill_only(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        if h.shape[1] != T:  # a decoding step: leave the generated token alone
            return None
        if args:
            return (h + delta,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h + delta}

    handle = decoder_layers(ck.hf)[1].register_forward_pre_hook(prefill_only, with_kwargs=True)
    with hooks([handle]):
        ref = hf_greedy(ck.hf, tokens, mask, N)

    iv = emojax.Intervention.add(ck.config, 1, vector, coef=4.0, positions=positions)
    out = emojax.generate(
        ck.params,
        ck.config,
        jnp.asarray(tokens),
        max_new_tokens=N,
        attention_mask=mask,
        intervention=iv,
    )

    np.testing.assert_array_equal(np.asarray(out), ref)


@pytest.mark.parametrize("family", ["gemma2"])  # post-norm write sites
def test_ablation_applies_to_generated_tokens(checkpoints, family):
    ck = checkpoints(family)
    tokens, mask = _prompts(seed=4)
    r = random_unit(ck.config.d_model, seed=5)
    with ablated(ck.hf, r):  # the write-site hooks fire on the prefill and on every step
        ref = hf_greedy(ck.hf, tokens, mask, N)
    assert (ref != hf_greedy(ck.hf, tokens, mask, N)).any(), "ablation too weak to be tested"

    out = emojax.generate(
        ck.params,
        ck.config,
        jnp.asarray(tokens),
        max_new_tokens=N,
        attention_mask=mask,
        intervention=emojax.Intervention.ablate(ck.config, r),
    )

    np.testing.assert_array_equal(np.asarray(out), ref)


def test_sampling_is_reproducible_and_tiny_temperature_is_greedy(checkpoints):
    ck = checkpoints("llama")
    tokens, mask = _prompts()
    run = lambda temperature, seed: np.asarray(
        emojax.generate(
            ck.params,
            ck.config,
            jnp.asarray(tokens),
            max_new_tokens=N,
            attention_mask=mask,
            temperature=temperature,
            rng=jax.random.PRNGKey(seed),
        )
    )
    greedy = hf_greedy(ck.hf, tokens, mask, N)

    a, b, c = run(1.0, 0), run(1.0, 0), run(1.0, 1)

    np.testing.assert_array_equal(a, b)
    assert (a[:, T:] != c[:, T:]).any()  # 18 draws over ~128 tokens: identical is ~impossible
    assert ((a >= 0) & (a < ck.config.vocab_size)).all()
    # Logit gaps here are O(0.01-1), so temperature 1e-4 puts all mass on the argmax.
    np.testing.assert_array_equal(run(1e-4, 0), greedy)
