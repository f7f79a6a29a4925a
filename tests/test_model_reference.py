"""emojax against transformers on tiny random checkpoints of every supported family.

Each test builds (once per session, see conftest.py) a float32 PyTorch model, saves it with
`save_pretrained`, loads it with `emojax.load_model` and compares: logits (max abs 1e-4),
`resid[l]` vs `output_hidden_states[l]` for l < L, left-padded batches, steering vs a
forward-pre-hook, directional ablation vs write-site hooks and vs weight orthogonalisation.
Also: bfloat16 loading, and full-size configs checked with `jax.eval_shape` only.

Dimension letters: B batch, T time, D model, L layers, V vocab.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import (
    FAMILIES,
    POST_NORM_FAMILIES,
    ablated,
    hf_run,
    jit_forward,
    left_pad_mask,
    orthogonalised,
    random_tokens,
    random_unit,
    steered,
)

import emojax

ATOL = 1e-4  # float32 end to end; observed differences are ~1e-6
# One batch serves the plain, padded and steering tests so that each family compiles once:
# rows 0-1 are unpadded, rows 2-3 left-padded. T = 12 exceeds the Mistral (4) and Gemma 2 (5)
# sliding windows.
B, T = 4, 12
NUM_PAD = [0, 0, 3, 7]


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    mask = left_pad_mask(B, T, NUM_PAD)
    tokens = np.where(mask == 1, random_tokens(B, T, seed=seed), 0).astype(np.int32)
    return tokens, mask


def _close(actual, expected, what: str, atol: float = ATOL) -> None:
    actual = np.asarray(actual, np.float32)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0, err_msg=what)


def _final_norm(hf, h: np.ndarray) -> np.ndarray:
    norm = hf.transformer.ln_f if hf.config.model_type == "gpt2" else hf.model.norm
    with torch.no_grad():
        return norm(torch.tensor(np.asarray(h, np.float32))).numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_resid_match_transformers(checkpoints, family):
    ck = checkpoints(family)
    cfg = ck.config
    tokens, mask = _batch()
    ref_logits, ref_hidden = hf_run(ck.hf, tokens, mask)

    out = jit_forward()(ck.params, cfg, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))

    assert out.logits.shape == (B, T, cfg.vocab_size)
    assert out.logits.dtype == jnp.float32
    assert out.resid.shape == (cfg.num_layers + 1, B, T, cfg.d_model)
    full = slice(0, 2)  # the unpadded rows: every position
    _close(out.logits[full], ref_logits[full], f"{family} logits")
    for l in range(cfg.num_layers):
        _close(out.resid[l, full], ref_hidden[l][full], f"{family} resid[{l}]")
    # resid[L] is before the final norm; HF's last hidden state is after it.
    _close(_final_norm(ck.hf, out.resid[-1, full]), ref_hidden[-1][full], f"{family} resid[L]")


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_matches_transformers(checkpoints, family):
    ck = checkpoints(family)
    tokens, mask = _batch()
    ref_logits, ref_hidden = hf_run(ck.hf, tokens, mask)  # explicit cumsum - 1 position ids

    out = jit_forward()(ck.params, ck.config, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))

    real = mask.astype(bool)
    _close(np.asarray(out.logits)[real], ref_logits[real], f"{family} padded logits")
    for l in range(ck.config.num_layers):
        _close(np.asarray(out.resid[l])[real], ref_hidden[l][real], f"{family} resid[{l}]")
    # Padding rows must not turn into NaN/inf (they would poison masked means downstream).
    assert np.isfinite(np.asarray(out.logits)).all()
    assert np.isfinite(np.asarray(out.resid)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_steering_matches_forward_pre_hook(checkpoints, family):
    ck = checkpoints(family)
    cfg = ck.config
    tokens, mask = _batch(seed=2)
    real = mask.astype(bool)
    vector = 1.5 * random_unit(cfg.d_model, seed=3)  # not unit: steering must not normalise
    coef = 2.0
    every = np.ones((B, T), bool)  # positions=None is the same in forward (see test_interventions)
    some = np.zeros((B, T), bool)
    some[:, -4:] = True
    some[0, 1] = True
    cases = [(0, every), (cfg.num_layers - 1, every), (1, some)]
    _, clean_hidden = hf_run(ck.hf, tokens, mask)

    for layer, positions in cases:
        with steered(ck.hf, layer, vector, coef, positions):
            ref_logits, ref_hidden = hf_run(ck.hf, tokens, mask)
        iv = emojax.Intervention.add(cfg, layer, vector, coef=coef, positions=positions)
        out = jit_forward()(
            ck.params, cfg, jnp.asarray(tokens), attention_mask=jnp.asarray(mask), intervention=iv
        )
        what = f"{family} steer layer {layer} all={positions.all()}"
        _close(np.asarray(out.logits)[real], ref_logits[real], what + " logits")
        for l in range(layer + 1, cfg.num_layers):
            _close(np.asarray(out.resid[l])[real], ref_hidden[l][real], what + f" resid[{l}]")
        # resid[layer] is captured after the addition (what the pre-hooked layer reads).
        delta = coef * vector * positions[..., None]
        steered_in = np.asarray(out.resid[layer]) - delta
        _close(steered_in[real], clean_hidden[layer][real], what + " resid[layer] - c v")


@pytest.mark.parametrize("family", FAMILIES)
def test_ablation_matches_write_site_hooks(checkpoints, family):
    ck = checkpoints(family)
    cfg = ck.config
    tokens, mask = _batch(seed=4)
    real = mask.astype(bool)
    r = random_unit(cfg.d_model, seed=5)
    with ablated(ck.hf, r):
        ref_logits, ref_hidden = hf_run(ck.hf, tokens, mask)

    # A non-unit direction: ablate() must normalise it.
    iv = emojax.Intervention.ablate(cfg, 3.0 * r)
    out = jit_forward()(
        ck.params, cfg, jnp.asarray(tokens), attention_mask=jnp.asarray(mask), intervention=iv
    )

    _close(np.asarray(out.logits)[real], ref_logits[real], f"{family} ablated logits")
    for l in range(cfg.num_layers):
        _close(np.asarray(out.resid[l])[real], ref_hidden[l][real], f"{family} resid[{l}]")
    # Every residual is orthogonal to r (resid[L] too: it is a sum of ablated writes).
    proj = np.einsum("lbtd,d->lbt", np.asarray(out.resid), r)
    assert np.abs(proj[:, real]).max() < 1e-4


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in POST_NORM_FAMILIES])
def test_ablation_matches_weight_orthogonalisation(checkpoints, family):
    ck = checkpoints(family)
    cfg = ck.config
    tokens, mask = _batch(seed=4)
    real = mask.astype(bool)
    r = random_unit(cfg.d_model, seed=5)
    ref_logits, ref_hidden = hf_run(orthogonalised(ck.hf, r), tokens, mask)

    iv = emojax.Intervention.ablate(cfg, r)
    out = jit_forward()(
        ck.params, cfg, jnp.asarray(tokens), attention_mask=jnp.asarray(mask), intervention=iv
    )

    _close(np.asarray(out.logits)[real], ref_logits[real], f"{family} orthogonalised logits")
    for l in range(cfg.num_layers):
        _close(np.asarray(out.resid[l])[real], ref_hidden[l][real], f"{family} resid[{l}]")


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_bfloat16_close_to_float32(checkpoints, family):
    ck = checkpoints(family)
    model16 = emojax.load_model(ck.path, dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(model16.params)} == {jnp.dtype(jnp.bfloat16)}
    tokens, mask = (jnp.asarray(x) for x in _batch(seed=6))

    out32 = jit_forward()(ck.params, ck.config, tokens, attention_mask=mask)
    out16 = jit_forward()(model16.params, model16.config, tokens, attention_mask=mask)

    assert out16.logits.dtype == jnp.float32  # logits are promised in float32
    real = np.asarray(mask).astype(bool)
    l32, l16 = np.asarray(out32.logits)[real], np.asarray(out16.logits, np.float32)[real]
    assert np.isfinite(l16).all()
    # bf16 keeps 8 significant bits: each rounding is off by up to 2^-8 ~ 0.4% relative.
    # Weights, activations and every layer's output are rounded, and ~10 such roundings per
    # layer over 3 layers add up like a random walk to a few percent; 5% of the logit scale
    # (max |logit| ~ 3 here) leaves a margin while still catching real bugs (a wrong norm
    # offset, a missing cast or a float32-only path all move logits by O(1)). Observed: 1.4-1.7%
    # (llama, gemma2, qwen3, gpt2), correlation 0.9999.
    scale = np.abs(l32).max()
    err = np.abs(l16 - l32).max()
    assert err < 0.05 * scale, f"bf16 max abs error {err:.4f} vs logit scale {scale:.3f}"
    assert np.corrcoef(l16.ravel(), l32.ravel())[0, 1] > 0.999


# ---------------------------------------------------------------------------------------------
# Full-size configs: shapes only, never materialised.

FULL_SIZE = {
    "Llama-3.1-8B": (
        {
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
            "hidden_act": "silu",
            "hidden_size": 4096,
            "initializer_range": 0.02,
            "intermediate_size": 14336,
            "max_position_embeddings": 131072,
            "mlp_bias": False,
            "model_type": "llama",
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "rope_theta": 500000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.43.0.dev0",
            "use_cache": True,
            "vocab_size": 128256,
        },
        8_030_261_248,
    ),
    "Gemma-2-9B": (
        {
            "architectures": ["Gemma2ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "attn_logit_softcapping": 50.0,
            "bos_token_id": 2,
            "cache_implementation": "hybrid",
            "eos_token_id": 1,
            "final_logit_softcapping": 30.0,
            "head_dim": 256,
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": 3584,
            "initializer_range": 0.02,
            "intermediate_size": 14336,
            "max_position_embeddings": 8192,
            "model_type": "gemma2",
            "num_attention_heads": 16,
            "num_hidden_layers": 42,
            "num_key_value_heads": 8,
            "pad_token_id": 0,
            "query_pre_attn_scalar": 256,
            "rms_norm_eps": 1e-06,
            "rope_theta": 10000.0,
            "sliding_window": 4096,
            "sliding_window_size": 4096,
            "torch_dtype": "float32",
            "transformers_version": "4.42.0.dev0",
            "use_cache": True,
            "vocab_size": 256000,
        },
        9_241_705_984,
    ),
    "Qwen2.5-7B": (
        {
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "hidden_act": "silu",
            "hidden_size": 3584,
            "initializer_range": 0.02,
            "intermediate_size": 18944,
            "max_position_embeddings": 131072,
            "max_window_layers": 28,
            "model_type": "qwen2",
            "num_attention_heads": 28,
            "num_hidden_layers": 28,
            "num_key_value_heads": 4,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": 131072,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.43.1",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": 152064,
        },
        7_615_616_512,
    ),
}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_config_shapes(name):
    hf_dict, expected_params = FULL_SIZE[name]  # counts from transformers on the meta device
    cfg = emojax.ModelConfig.from_hf_dict(hf_dict)
    assert cfg.num_layers == hf_dict["num_hidden_layers"]
    assert cfg.d_model == hf_dict["hidden_size"]
    assert cfg.vocab_size == hf_dict["vocab_size"]
    assert cfg.num_kv_heads == hf_dict["num_key_value_heads"]
    hash(cfg)  # usable as a static jit argument

    shapes = jax.eval_shape(lambda: emojax.init_params(cfg, jax.random.PRNGKey(0)))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected_params
    assert shapes.embed.shape == (cfg.vocab_size, cfg.d_model)
    assert all(x.shape[0] == cfg.num_layers for x in jax.tree.leaves(shapes.layers))

    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    out = jax.eval_shape(lambda p, t: emojax.forward(p, cfg, t), shapes, tokens)
    assert out.logits.shape == (1, 8, cfg.vocab_size)
    assert out.logits.dtype == jnp.float32
    assert out.resid.shape == (cfg.num_layers + 1, 1, 8, cfg.d_model)
