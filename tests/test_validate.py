"""Input validation at the API boundary (emojax.validate): a bad-input table, the jit contract.

Every row of the table is an input that the code before emojax.validate accepted silently
(clamped ids, NaN outputs, layer 1.5 read as 1, ...) or rejected deep inside JAX without
naming the argument; each must now raise the listed exception naming the argument. The
valid-input tests are the other side: the same entry points accept the inputs next to each
bad one (numpy ints, bool masks, 0 new tokens, sampling with a key).

Dimension letters: B batch, T time, L layers, D model width, V vocabulary.
"""

from __future__ import annotations

import os
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import _TINY, left_pad_mask, random_tokens  # noqa: E402

import emojax  # noqa: E402
from emojax import control_vector, extract, sweep  # noqa: E402

V, D, L = _TINY["vocab_size"], _TINY["hidden_size"], _TINY["num_hidden_layers"]


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    """The tiny Llama of conftest (random init, no PyTorch) and valid inputs for it."""
    cfg = emojax.ModelConfig.from_hf_dict({"model_type": "llama", **_TINY})
    params = emojax.init_params(cfg, jax.random.PRNGKey(0))
    tokens = random_tokens(2, 6)  # int32 [B, T]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2, L + 1, D)).astype(np.float32)  # [C, L + 1, D]
    prompts = sweep.SweepPrompts(
        tokens=tokens,
        mask=left_pad_mask(2, 6, [2, 0]),
        harmful=np.array([True, False]),
        kinds=("harmful", "harmless"),
        neutral_tokens=tokens,
        neutral_mask=np.ones_like(tokens),
    )
    return types.SimpleNamespace(
        cfg=cfg,
        params=params,
        tokens=tokens,
        vectors=vectors,
        vector_set=types.SimpleNamespace(
            concepts=("refusal", "concern"), vectors=vectors, layer_norms=np.ones(L + 1)
        ),
        model=types.SimpleNamespace(config=cfg, params=params, tokenizer=None),
        prompts=prompts,
        tmp=tmp_path_factory.mktemp("validate"),
    )


def _put(x, index, value):
    x = np.array(x)
    x[index] = value
    return x


def _nan_at(x, index):
    return _put(np.asarray(x, np.float32), index, np.nan)


def _forward(m, tokens=None, **kw):
    return emojax.forward(m.params, m.cfg, m.tokens if tokens is None else tokens, **kw)


def _generate(m, tokens=None, **kw):
    kw.setdefault("max_new_tokens", 2)
    return emojax.generate(m.params, m.cfg, m.tokens if tokens is None else tokens, **kw)


def _nan_intervention(m):
    iv = emojax.Intervention.add(m.cfg, 1, m.vectors[0, 0])
    return iv.replace(add_vectors=iv.add_vectors.at[0, 1, 5].set(jnp.nan))


def _sweep(m, prompts=None, vectors=None, **config):
    return sweep.run_sweep(
        m.model,
        m.vector_set if vectors is None else vectors,
        m.prompts if prompts is None else prompts,
        {"num_random": 0, "joint_random": 0, **config},
        refusal_ids=[3, 4],
    )


def _prompts(m, **changes):
    p = m.prompts
    kw = dict(tokens=p.tokens, mask=p.mask, harmful=p.harmful, kinds=p.kinds)
    kw |= dict(neutral_tokens=p.neutral_tokens, neutral_mask=p.neutral_mask)
    return sweep.SweepPrompts(**(kw | changes))


def _vector_set(m, vectors):
    return types.SimpleNamespace(
        concepts=m.vector_set.concepts, vectors=vectors, layer_norms=np.ones(vectors.shape[1])
    )


def _int_checkpoint(m):
    """A saved tiny checkpoint whose q_proj of layer 1 is stored as int32."""
    from safetensors.numpy import load_file, save_file

    path = m.tmp / "int_ckpt"
    emojax.save_pretrained(m.params, m.cfg, str(path))
    file = str(path / "model.safetensors")
    tensors = load_file(file)
    name = "model.layers.1.self_attn.q_proj.weight"
    tensors[name] = np.round(tensors[name] * 100).astype(np.int32)
    save_file(tensors, file, metadata={"format": "pt"})
    return emojax.load_model(str(path), tokenizer=False)


def _refusal(m, vectors=None, refusal_ids=(3, 4), harmful=None):
    pair = (m.tokens, np.ones_like(m.tokens))
    return extract.select_refusal_layer(
        m.params,
        m.cfg,
        m.vectors[0] if vectors is None else vectors,
        pair if harmful is None else harmful,
        pair,
        list(refusal_ids),
    )


# (id, call(m), exception, regex the message must match: the argument and index / value)
BAD_INPUTS = [
    # forward: tokens
    ("forward id >= V", lambda m: _forward(m, _put(m.tokens, (1, 3), V)), ValueError,
     rf"tokens\[1, 3\] = {V} is not a token id .*vocab_size {V}"),
    ("forward id < 0", lambda m: _forward(m, _put(m.tokens, (0, 0), -1)), ValueError,
     r"tokens\[0, 0\] = -1 is not a token id"),
    ("forward float tokens", lambda m: _forward(m, m.tokens.astype(np.float32)), TypeError,
     r"tokens must have an integer dtype, got float32"),
    ("forward 1-D tokens", lambda m: _forward(m, m.tokens[0]), ValueError,
     r"tokens must be 2-D \[B, T\].*\(6,\)"),
    # forward: mask, positions
    ("forward mask shape", lambda m: _forward(m, attention_mask=np.ones((2, 5))), ValueError,
     r"attention_mask has shape \(2, 5\), expected \(2, 6\)"),
    ("forward all-zero mask row", lambda m: _forward(m, attention_mask=left_pad_mask(2, 6, [0, 6])),
     ValueError, r"attention_mask row 1 has no real token"),
    ("forward mask value 2", lambda m: _forward(m, attention_mask=_put(np.ones((2, 6)), (0, 4), 2)),
     ValueError, r"attention_mask\[0, 4\] = 2"),
    ("forward logit position >= T",
     lambda m: _forward(m, logit_positions=np.array([[5], [6]]), capture=False), ValueError,
     r"logit_positions\[1, 0\] = 6 is not a position"),
    ("forward start_layer 1.5", lambda m: _forward(m, start_layer=1.5), TypeError,
     r"start_layer must be an integer, got 1.5"),
    # forward: interventions
    ("forward NaN intervention", lambda m: _forward(m, intervention=_nan_intervention(m)),
     ValueError, r"intervention.add_vectors\[0, 1, 5\] = nan is not finite .*layer"),
    ("forward intervention of another model",
     lambda m: _forward(m, intervention=emojax.Intervention.none(m.cfg).replace(
         add_vectors=jnp.zeros((1, L + 2, D)))),
     ValueError, rf"intervention.add_vectors has shape \(1, {L + 2}, {D}\)"),
    # generate
    ("generate id >= V", lambda m: _generate(m, _put(m.tokens, (0, 2), V + 7)), ValueError,
     rf"tokens\[0, 2\] = {V + 7}"),
    ("generate all-zero mask row",
     lambda m: _generate(m, attention_mask=left_pad_mask(2, 6, [6, 1])), ValueError,
     r"attention_mask row 0 has no real token"),
    ("generate max_new_tokens < 0", lambda m: _generate(m, max_new_tokens=-1), ValueError,
     r"max_new_tokens must be >= 0, got -1"),
    ("generate max_new_tokens float", lambda m: _generate(m, max_new_tokens=2.0), TypeError,
     r"max_new_tokens must be an integer, got 2.0"),
    ("generate temperature without rng", lambda m: _generate(m, temperature=0.7), ValueError,
     r"temperature = 0.7 > 0 samples and needs rng"),
    ("generate negative temperature", lambda m: _generate(m, temperature=-1.0), ValueError,
     r"temperature = -1.0 must be finite and >= 0"),
    ("generate NaN intervention", lambda m: _generate(m, intervention=_nan_intervention(m)),
     ValueError, r"intervention.add_vectors\[0, 1, 5\] = nan"),
    # Intervention constructors
    ("add layer 1.5", lambda m: emojax.Intervention.add(m.cfg, 1.5, m.vectors[0, 0]), TypeError,
     r"layer must be an integer, got 1.5"),
    ("add layer True", lambda m: emojax.Intervention.add(m.cfg, True, m.vectors[0, 0]),
     TypeError, r"layer must be an integer, got the bool True"),
    ("add layers [1, 2.5]",
     lambda m: emojax.Intervention.add(m.cfg, [1, 2.5], m.vectors[0, 0]), TypeError,
     r"layer\[1\] must be an integer, got 2.5"),
    ("add NaN vector", lambda m: emojax.Intervention.add(m.cfg, 1, _nan_at(m.vectors[0, 0], 7)),
     ValueError, r"vector\[7\] = nan is not finite"),
    ("add inf coef",
     lambda m: emojax.Intervention.add(m.cfg, 1, m.vectors[0, 0], coef=float("inf")),
     ValueError, r"coef = inf is not finite"),
    ("steer NaN coef",
     lambda m: emojax.Intervention.steer(m.cfg, np.eye(L)[0], m.vectors[0, 0], jnp.nan),
     ValueError, r"coef = nan is not finite"),
    ("ablate NaN direction",
     lambda m: emojax.Intervention.ablate(m.cfg, _nan_at(m.vectors[0, 0], 3)), ValueError,
     r"ablation direction\[3\] = nan is not finite"),
    ("cap NaN max_value",
     lambda m: emojax.Intervention.cap(m.cfg, m.vectors[0, 0], float("nan")), ValueError,
     r"max_value = nan is NaN"),
    ("cap min > max",
     lambda m: emojax.Intervention.cap(m.cfg, m.vectors[0, 0], 1.0, min_value=2.0), ValueError,
     r"min_value = 2.0 exceeds max_value = 1.0"),
    ("control vector NaN scale",
     lambda m: control_vector.load_intervention(m.cfg, str(m.tmp / "cv.gguf"), np.nan),
     ValueError, r"scale = nan is not finite"),
    ("forward intervention not an Intervention",
     lambda m: _forward(m, intervention={"add_vectors": m.vectors[:1, :L]}), TypeError,
     r"intervention must be an emojax.Intervention, got dict \(without add_vectors, "),
    # loading
    ("int32 weight tensor", _int_checkpoint, emojax.CheckpointError,
     r"model\.layers\.1\.self_attn\.q_proj\.weight.* dtype int32"),
    # extraction
    ("capture id >= V",
     lambda m: extract.capture(m.params, m.cfg, [extract.ContrastSet(
         "concern", [[1, 5, V + 1]], [[1, 5, 6]])]),
     ValueError, rf"concern.positive\[0\]\[2\] = {V + 1} is not a token id"),
    ("capture neutral id < 0",
     lambda m: extract.capture(m.params, m.cfg, [extract.ContrastSet(
         "concern", [[1, 5]], [[1, 6]])], [[1, -4]]),
     ValueError, r"neutral\[0\]\[1\] = -4"),
    ("refusal NaN vectors", lambda m: _refusal(m, vectors=_nan_at(m.vectors[0], (2, 5))),
     ValueError, r"vectors\[2, 5\] = nan is not finite"),
    ("refusal vector width", lambda m: _refusal(m, vectors=m.vectors[0][:, :-1]), ValueError,
     rf"vectors has shape \({L + 1}, {D - 1}\), expected last axis \({D},\)"),
    ("refusal id >= V", lambda m: _refusal(m, refusal_ids=(3, V)), ValueError,
     rf"refusal_ids\[1\] = {V}"),
    ("refusal harmful id >= V",
     lambda m: _refusal(m, harmful=(_put(m.tokens, (1, 1), V), np.ones_like(m.tokens))),
     ValueError, rf"harmful tokens\[1, 1\] = {V}"),
    # sweep
    ("sweep prompt id >= V",
     lambda m: _sweep(m, prompts=_prompts(m, tokens=_put(m.tokens, (1, 4), V + 2))), ValueError,
     rf"prompts.tokens\[1, 4\] = {V + 2}"),
    ("sweep layer 1.5", lambda m: _sweep(m, layers=(1.5,)), ValueError,
     r"layers\[0\] = 1.5: a float is a depth fraction"),
    ("sweep layer out of range", lambda m: _sweep(m, layers=(0.5, L + 4)), IndexError,
     rf"layers\[1\] {L + 4} is out of range for a model with {L} layers"),
    ("sweep NaN vectors",
     lambda m: _sweep(m, vectors=_vector_set(m, _nan_at(m.vectors, (1, 2, 3)))), ValueError,
     r"vectors.vectors\[1, 2, 3\] = nan is not finite .*concept, layer"),
    ("sweep vector width", lambda m: _sweep(m, vectors=_vector_set(m, m.vectors[..., :-2])),
     ValueError, rf"vectors.vectors has shape .*expected last axis \({D},\)"),
    ("sweep NaN coef", lambda m: _sweep(m, coefs=(0.0, float("nan"))), ValueError,
     r"sweep coefs\[1\] = nan is not finite"),
    ("sweep max_new_tokens 0", lambda m: _sweep(m, max_new_tokens=0), ValueError,
     r"sweep max_new_tokens must be >= 1, got 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
def test_bad_input_is_named(m, call, error, message):
    with pytest.raises(error, match=message):
        call(m)


def test_valid_inputs_next_to_the_bad_ones_pass(m):
    """The null of the table: the neighbours of each bad input are accepted and used."""
    mask = left_pad_mask(2, 6, [2, 0]).astype(bool)  # bool masks are 0/1 masks
    out = _forward(m, m.tokens.astype(np.int64), attention_mask=mask)
    assert out.logits.shape == (2, 6, V) and np.isfinite(out.logits).all()
    v = m.vectors[0, 0]
    by_np_int = emojax.Intervention.add(m.cfg, np.int64(1), v, coef=np.float32(2.0))
    by_list = emojax.Intervention.add(m.cfg, [np.int32(1), -2], v, coef=2.0)  # -2 == layer 1
    np.testing.assert_array_equal(by_np_int.add_vectors, by_list.add_vectors)
    assert by_np_int.add_vectors[0, 1].any() and not by_np_int.add_vectors[0, 0].any()
    capped = emojax.Intervention.cap(m.cfg, v, 1.0)  # min_value -inf: no lower bound
    assert np.isneginf(capped.cap_min).all()
    assert _generate(m, max_new_tokens=0).shape == (2, 6)  # the prompts, nothing added
    sampled = _generate(m, temperature=0.7, rng=jax.random.key(0))
    assert sampled.shape == (2, 8) and (np.asarray(sampled) < V).all()
    assert sweep.resolve_layers((0.5, np.float32(0.5), -1, np.int64(0)), L) == (0, 1, 2)


def test_traced_inputs_skip_value_checks_at_no_cost(m):
    """Under jit the value checks are skipped silently and add nothing to the program."""
    bad = _put(m.tokens, (1, 3), V)
    fwd = jax.jit(emojax.forward, static_argnames=("config",))
    out = fwd(m.params, m.cfg, bad)  # no error, no concretization error
    np.testing.assert_array_equal(out.logits, emojax.forward.unchecked(m.params, m.cfg, bad).logits)
    checked = jax.make_jaxpr(lambda p, t: emojax.forward(p, m.cfg, t))(m.params, bad)
    unchecked = jax.make_jaxpr(lambda p, t: emojax.forward.unchecked(p, m.cfg, t))(m.params, bad)
    assert str(checked) == str(unchecked)
    # Static checks (dtype, rank, shape) still run at trace time: they read no values.
    with pytest.raises(TypeError, match="tokens must have an integer dtype"):
        fwd(m.params, m.cfg, bad.astype(np.float32))


def test_eager_error_and_checkify_error_under_jit(m):
    from jax.experimental import checkify

    bad = _put(m.tokens, (1, 3), V)
    with pytest.raises(ValueError, match=rf"tokens\[1, 3\] = {V}"):
        emojax.forward(m.params, m.cfg, bad)  # eager: a ValueError before anything runs
    checked = jax.jit(emojax.checked_forward, static_argnames=("config", "capture"))
    err, _ = checked(m.params, m.cfg, bad)
    with pytest.raises(checkify.JaxRuntimeError, match=rf"tokens\[1, 3\] = {V} is not a token"):
        err.throw()
    empty_row = jnp.asarray(left_pad_mask(2, 6, [0, 6]))
    err, _ = checked(m.params, m.cfg, m.tokens, attention_mask=empty_row)
    with pytest.raises(checkify.JaxRuntimeError, match="attention_mask row 1 has no real token"):
        err.throw()
    err, _ = checked(m.params, m.cfg, m.tokens, intervention=_nan_intervention(m))
    with pytest.raises(checkify.JaxRuntimeError, match=r"add_vectors\[0, 1, 5\] = nan"):
        err.throw()
    # Valid input: no error, and the same output as forward.
    err, out = checked(m.params, m.cfg, m.tokens, capture=False)
    assert err.get() is None
    np.testing.assert_allclose(
        out.logits, emojax.forward(m.params, m.cfg, m.tokens, capture=False).logits, atol=1e-6
    )
    gen = jax.jit(emojax.checked_generate, static_argnames=("config", "max_new_tokens"))
    err, _ = gen(m.params, m.cfg, m.tokens, max_new_tokens=1, temperature=jnp.float32(0.5))
    with pytest.raises(checkify.JaxRuntimeError, match="needs rng"):
        err.throw()
    err, _ = gen(m.params, m.cfg, m.tokens, max_new_tokens=1, temperature=jnp.float32(0.0))
    assert err.get() is None
