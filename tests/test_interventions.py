"""Invariants of the forward pass and of interventions as data.

Scan equals an unrolled layer loop; prefix reuse (`start_layer`) equals the full pass;
coefficient 0 equals no intervention; `jax.vmap` over a stacked batch of interventions equals a
Python loop; one compile serves every layer / vector / coefficient; `a + b` applies both;
capping clamps the projection; logits only where asked.

Dimension letters: B batch, T time, D model, L layers, N stacked interventions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import (
    decoder_layers,
    hf_run,
    hooks,
    jit_forward,
    left_pad_mask,
    random_tokens,
    random_unit,
    steered,
    steering_hook,
)

import emojax

B, T = 2, 8
ATOL = 1e-5  # same program, same dtype: only reassociation differs


@pytest.fixture(scope="module")
def llama(checkpoints):
    return checkpoints("llama")


def _tokens(seed: int = 0) -> jax.Array:
    return jnp.asarray(random_tokens(B, T, seed=seed))


def _close(a, b, atol: float = ATOL, what: str = "") -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0, err_msg=what)


def _one_layer_slice(params, config, layer: int):
    """Params and config of layers 0..layer, so that start_layer=layer runs exactly one layer."""
    cfg = dataclasses.replace(
        config, num_layers=layer + 1, sliding_layers=config.sliding_layers[: layer + 1]
    )
    sliced = params.replace(layers=jax.tree.map(lambda x: x[: layer + 1], params.layers))
    return sliced, cfg


# ---------------------------------------------------------------------------------------------
# scan vs unrolled


@pytest.mark.parametrize("family", ["llama"])
def test_scan_equals_unrolled_layer_loop(checkpoints, family):
    """A Python loop over layers, each step a forward of exactly one layer, all in one jit."""
    ck = checkpoints(family)
    params, cfg = ck.params, ck.config
    tokens = _tokens()
    full = jit_forward()(params, cfg, tokens)

    @jax.jit
    def unrolled(params, tokens):
        h = emojax.forward(params, cfg, tokens, return_logits=False).resid[0]
        inputs = []
        for l in range(cfg.num_layers):  # traced L times: no scan over layers survives
            p_l, cfg_l = _one_layer_slice(params, cfg, l)
            out = emojax.forward(p_l, cfg_l, tokens, start_layer=l, resid=h, return_logits=False)
            inputs.append(out.resid[0])
            h = out.resid[1]
        logits = emojax.forward(params, cfg, tokens, start_layer=cfg.num_layers, resid=h).logits
        return jnp.stack([*inputs, h]), logits

    resid, logits = unrolled(params, tokens)

    _close(resid, full.resid, what=f"{family} resid")
    _close(logits, full.logits, what=f"{family} logits")


def test_start_layer_reuses_the_prefix(llama):
    params, cfg = llama.params, llama.config
    tokens = _tokens(seed=2)
    v = random_unit(cfg.d_model, 2)
    base = jit_forward()(params, cfg, tokens)
    iv = emojax.Intervention.add(cfg, 2, v, 5.0)
    steered_full = jit_forward()(params, cfg, tokens, intervention=iv)

    # Steering at layer 2 leaves resid[0..2] unchanged, so layers 1.. can start from base.
    resumed = jit_forward()(
        params, cfg, tokens, start_layer=1, resid=base.resid[1], intervention=iv
    )

    assert resumed.resid.shape == (cfg.num_layers, B, T, cfg.d_model)
    _close(resumed.logits, steered_full.logits)
    _close(resumed.resid, steered_full.resid[1:])


# ---------------------------------------------------------------------------------------------
# interventions as data


def test_coefficient_zero_equals_no_intervention(llama):
    params, cfg = llama.params, llama.config
    tokens = _tokens(seed=3)
    base = jit_forward()(params, cfg, tokens)
    for iv in (
        emojax.Intervention.add(cfg, 1, random_unit(cfg.d_model, 3), coef=0.0),
        emojax.Intervention.none(cfg),
    ):
        out = jit_forward()(params, cfg, tokens, intervention=iv)
        _close(out.logits, base.logits)
        _close(out.resid, base.resid)


def test_positions_none_equals_all_positions_mask(llama):
    params, cfg = llama.params, llama.config
    tokens = _tokens(seed=4)
    v = random_unit(cfg.d_model, 4)
    every = jit_forward()(params, cfg, tokens, intervention=emojax.Intervention.add(cfg, 1, v))
    ones = np.ones((B, T), bool)
    masked = jit_forward()(
        params, cfg, tokens, intervention=emojax.Intervention.add(cfg, 1, v, positions=ones)
    )
    _close(every.logits, masked.logits)


def test_layer_sequence_equals_sum_of_single_layers(llama):
    params, cfg = llama.params, llama.config
    tokens = _tokens(seed=5)
    v = random_unit(cfg.d_model, 5)
    both = emojax.Intervention.add(cfg, [0, 2], v, 2.0)
    summed = emojax.Intervention.add(cfg, 0, v, 2.0) + emojax.Intervention.add(cfg, 2, v, 2.0)
    _close(
        jit_forward()(params, cfg, tokens, intervention=both).logits,
        jit_forward()(params, cfg, tokens, intervention=summed).logits,
    )


def test_vmap_over_interventions_equals_python_loop(llama):
    params, cfg = llama.params, llama.config
    tokens = _tokens(seed=6)
    ivs = [
        emojax.Intervention.add(cfg, layer, random_unit(cfg.d_model, 10 + i), coef)
        for i, (layer, coef) in enumerate([(0, 1.0), (1, -3.0), (2, 6.0), (1, 0.0)])
    ]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *ivs)

    batched = jax.jit(jax.vmap(lambda iv: emojax.forward(params, cfg, tokens, intervention=iv)))(
        stacked
    )

    assert batched.logits.shape == (len(ivs), B, T, cfg.vocab_size)
    for i, iv in enumerate(ivs):
        single = jit_forward()(params, cfg, tokens, intervention=iv)
        _close(batched.logits[i], single.logits, what=f"condition {i} logits")
        _close(batched.resid[i], single.resid, what=f"condition {i} resid")


def test_one_compile_serves_every_layer_vector_and_coefficient(llama):
    params, cfg = llama.params, llama.config
    tokens = _tokens(seed=7)
    traces = []

    @jax.jit
    def logits_of(iv):
        traces.append(1)  # runs only while tracing
        return emojax.forward(params, cfg, tokens, intervention=iv).logits

    conditions = [(0, 0, 1.0), (2, 1, -4.0), (1, 2, 8.0), ([0, 1], 3, 0.5)]
    results = [
        logits_of(emojax.Intervention.add(cfg, layer, random_unit(cfg.d_model, seed), coef))
        for layer, seed, coef in conditions
    ]

    assert len(traces) == 1
    assert logits_of._cache_size() == 1
    assert not np.allclose(results[0], results[1])  # the conditions really differ

    # Intervention.steer builds the same thing from traced arrays inside jit.
    @jax.jit
    def steer_logits(onehot, vector, coef):
        iv = emojax.Intervention.steer(cfg, onehot, vector, coef)
        return emojax.forward(params, cfg, tokens, intervention=iv).logits

    for layer, seed, coef in conditions[:3]:
        onehot = jax.nn.one_hot(layer, cfg.num_layers)
        vector = random_unit(cfg.d_model, seed)
        _close(steer_logits(onehot, vector, coef), logits_of(
            emojax.Intervention.add(cfg, layer, vector, coef)
        ))  # fmt: skip
    assert steer_logits._cache_size() == 1


def test_sum_applies_both_against_pytorch_hooks(llama):
    params, cfg, hf = llama.params, llama.config, llama.hf
    tokens = random_tokens(B, T, seed=8)
    v0, v2 = random_unit(cfg.d_model, 20), random_unit(cfg.d_model, 21)
    r = random_unit(cfg.d_model, 22)
    rt = torch.from_numpy(r)
    project = lambda x: x - (x @ rt)[..., None] * rt

    # Reference: add v0 at layer 0, ablate r at layer 1 (its input and both writes), add v2 at 2.
    def ablate_input(module, args, kwargs):
        return (project(args[0]),) + tuple(args[1:]), kwargs

    def ablate_write(module, args, output):
        return (project(output[0]),) + tuple(output[1:]) if isinstance(output, tuple) else (
            project(output)
        )  # fmt: skip

    layer1 = decoder_layers(hf)[1]
    handles = [
        decoder_layers(hf)[0].register_forward_pre_hook(
            steering_hook(torch.from_numpy(2.0 * v0)), with_kwargs=True
        ),
        layer1.register_forward_pre_hook(ablate_input, with_kwargs=True),
        layer1.self_attn.register_forward_hook(ablate_write),
        layer1.mlp.register_forward_hook(ablate_write),
    ]
    with hooks(handles), steered(hf, 2, v2, -3.0):
        ref_logits, ref_hidden = hf_run(hf, tokens)

    iv = (
        emojax.Intervention.add(cfg, 0, v0, 2.0)
        + emojax.Intervention.ablate(cfg, r, layers=[1])
        + emojax.Intervention.add(cfg, 2, v2, -3.0)
    )
    out = jit_forward()(params, cfg, jnp.asarray(tokens), intervention=iv)

    _close(out.logits, ref_logits, atol=1e-4)
    _close(out.resid[2] - (-3.0) * v2, ref_hidden[2], atol=1e-4)


def test_cap_clamps_the_projection(llama):
    params, cfg, hf = llama.params, llama.config, llama.hf
    tokens = random_tokens(B, T, seed=9)
    r = random_unit(cfg.d_model, 30)
    base = jit_forward()(params, cfg, jnp.asarray(tokens))
    proj = np.einsum("btd,d->bt", np.asarray(base.resid[1]), r)
    hi = float(np.median(proj))  # half of the positions get clamped
    lo = float(np.quantile(proj, 0.2))
    assert (proj > hi + 1e-3).any() and (proj < lo - 1e-3).any()

    rt = torch.from_numpy(r)

    def clamp(lo_, hi_):
        def hook(module, args, kwargs):
            h = args[0]
            p = h @ rt
            return (h + (p.clamp(lo_, hi_) - p)[..., None] * rt,) + tuple(args[1:]), kwargs

        return hook

    for iv, (lo_, hi_) in [
        (emojax.Intervention.cap(cfg, 2.0 * r, hi, layers=[1]), (None, hi)),
        (emojax.Intervention.cap(cfg, r, hi, layers=[1], min_value=lo), (lo, hi)),
    ]:
        handle = decoder_layers(hf)[1].register_forward_pre_hook(clamp(lo_, hi_), with_kwargs=True)
        with hooks([handle]):
            ref_logits, _ = hf_run(hf, tokens)
        out = jit_forward()(params, cfg, jnp.asarray(tokens), intervention=iv)
        capped = np.einsum("btd,d->bt", np.asarray(out.resid[1]), r)
        assert capped.max() <= hi + 1e-5
        if lo_ is not None:
            assert capped.min() >= lo - 1e-5
        untouched = (proj <= hi) & (lo_ is None or proj >= lo)
        _close(capped[untouched], proj[untouched])
        _close(out.resid[0], base.resid[0])
        _close(out.logits, ref_logits, atol=1e-4)

    # A cap above every projection changes nothing.
    loose = emojax.Intervention.cap(cfg, r, float(proj.max()) + 1.0, layers=[1])
    _close(jit_forward()(params, cfg, jnp.asarray(tokens), intervention=loose).logits, base.logits)


def test_vector_set_intervention_is_add_in_median_norm_units(llama):
    from emojax.vectors import VectorSet

    params, cfg = llama.params, llama.config
    L, D = cfg.num_layers, cfg.d_model
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, L + 1, D)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    vs = VectorSet(vectors=v, scales=np.ones((2, L + 1)), layer_norms=rng.uniform(2, 4, L + 1),
                   concepts=("concern", "refusal"), method="diff_of_means")  # fmt: skip
    same = lambda a, b: jax.tree.map(lambda x, y: _close(x, y, atol=1e-6), a, b)

    iv = vs.intervention(cfg, "refusal", layer=2, coef=0.5)
    same(iv, emojax.Intervention.add(cfg, 2, vs.steering_vector("refusal", 2, 0.5)))
    same(iv, emojax.Intervention.add(cfg, 2, 0.5 * vs.layer_norms[2] * v[1, 2]))
    raw = vs.intervention(cfg, "refusal", 2, 0.5, unit="raw")
    same(raw, emojax.Intervention.add(cfg, 2, 0.5 * v[1, 2]))
    assert not np.allclose(raw.add_vectors, iv.add_vectors)  # layer_norms[2] is 2..4, not 1
    # A negative layer is the same decoder layer as for Intervention.add (not site L + 1 - k).
    last = emojax.Intervention.add(cfg, L - 1, vs.steering_vector("concern", L - 1, 2.0))
    same(vs.intervention(cfg, "concern", -1, 2.0), last)
    mask = jnp.asarray(left_pad_mask(B, T, [0, 3]))
    prompt_only = emojax.Intervention.add(cfg, 1, vs.steering_vector("concern", 1), positions=mask)
    same(vs.intervention(cfg, "concern", 1, 1.0, positions=mask), prompt_only)

    # What it adds to resid[2] at every position is coef median norms along the direction.
    tokens = _tokens(seed=12)
    base = jit_forward()(params, cfg, tokens)
    out = jit_forward()(params, cfg, tokens, intervention=iv)
    delta = np.asarray(out.resid_at(2) - base.resid_at(2))
    _close(delta, np.broadcast_to(0.5 * vs.layer_norms[2] * v[1, 2], delta.shape), atol=1e-5)
    _close(out.resid_at(1), base.resid_at(1))

    with pytest.raises(IndexError, match=f"layer {L} is out of range"):
        vs.intervention(cfg, "refusal", L, 1.0)  # site L: the last layer's output
    with pytest.raises(ValueError, match="unit must be 'median_norm' or 'raw'"):
        vs.intervention(cfg, "refusal", 1, 1.0, unit="norm")
    with pytest.raises(ValueError, match="concept 'joy' is not in the set"):
        vs.intervention(cfg, "joy", 1, 1.0)
    other = VectorSet(v[:, :L], np.ones((2, L)), np.ones(L), vs.concepts, vs.method)
    with pytest.raises(ValueError, match=f"needs {L + 1} sites"):
        other.intervention(cfg, "refusal", 1, 1.0)


def test_bad_interventions_raise(llama):
    cfg = llama.config
    with pytest.raises(ValueError, match="shape"):
        emojax.Intervention.add(cfg, 0, np.ones(cfg.d_model + 1, np.float32))
    with pytest.raises(IndexError, match="layer"):
        emojax.Intervention.add(cfg, cfg.num_layers, np.ones(cfg.d_model, np.float32))
    with pytest.raises(ValueError, match="shape"):
        emojax.Intervention.ablate(cfg, np.ones(3, np.float32))


# ---------------------------------------------------------------------------------------------
# forward options


def test_logit_positions_and_optional_outputs(llama):
    params, cfg = llama.params, llama.config
    tokens = _tokens(seed=10)
    full = jit_forward()(params, cfg, tokens)
    where = jnp.asarray([[T - 1, 0], [3, T - 2]], jnp.int32)

    picked = jit_forward()(params, cfg, tokens, logit_positions=where)
    assert picked.logits.shape == (B, 2, cfg.vocab_size)
    _close(
        picked.logits, np.take_along_axis(np.asarray(full.logits), np.asarray(where)[..., None], 1)
    )

    bare = jit_forward()(params, cfg, tokens, return_logits=False, capture=False)
    assert bare.logits is None and bare.resid is None
    with pytest.raises(ValueError, match="capture=False"):
        bare.resid_at(0)


def test_resid_at_raises_where_indexing_clamps(llama):
    params, cfg = llama.params, llama.config
    L, D = cfg.num_layers, cfg.d_model
    tokens = _tokens(seed=11)
    out = emojax.forward(params, cfg, tokens)
    for layer in range(L + 1):
        np.testing.assert_array_equal(out.resid_at(layer), out.resid[layer])
    np.testing.assert_array_equal(out.resid_at(-1), out.resid[L])
    np.testing.assert_array_equal(out.resid_at(-(L + 1)), out.resid[0])
    # The plain array clamps, as every JAX array does: resid[L + 1] is resid[L], no error.
    np.testing.assert_array_equal(out.resid[L + 1], out.resid[L])
    for bad in (L + 1, -(L + 2), 100):
        with pytest.raises(IndexError, match=rf"resid layer {bad} is out of range .* {L} layers"):
            out.resid_at(bad)
    with pytest.raises(TypeError, match="layer must be an integer"):
        out.resid_at(1.0)

    # After prefix reuse it keeps the model's layer numbers; skipped layers are not there.
    tail = emojax.forward(params, cfg, tokens, start_layer=2, resid=out.resid_at(2))
    assert tail.start_layer == 2 and tail.resid.shape[0] == L - 1
    _close(tail.resid_at(2), out.resid_at(2))
    _close(tail.resid_at(-1), out.resid_at(L))
    with pytest.raises(IndexError, match="resid layer 1 was not computed: .*start_layer=2"):
        tail.resid_at(1)
    with pytest.raises(IndexError, match="out of range"):
        tail.resid_at(L + 1)

    # Output stays a pytree: under jit the check runs at trace time, under vmap the leading
    # axis stays.
    with pytest.raises(IndexError, match="out of range"):
        jax.jit(lambda p, t: emojax.forward(p, cfg, t).resid_at(L + 1))(params, tokens)
    assert len(jax.tree.leaves(out)) == 2
    rows = jax.vmap(lambda t: emojax.forward(params, cfg, t[None]))(tokens)
    assert rows.resid_at(L).shape == (B, 1, T, D)
    _close(rows.resid_at(L)[:, 0], out.resid_at(L), atol=1e-4)
    with pytest.raises(IndexError, match="out of range"):
        rows.resid_at(L + 1)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2", "gpt2"])
def test_last_layer_at_logit_positions_only(checkpoints, family):
    """Without capture, the last layer computes only the logit positions: the same logits.

    Covers left padding, sliding windows (gemma2: window 5 < T), query/key norms (qwen3),
    learned positions (gpt2), interventions, and prefix reuse that runs the last layer alone.
    """
    ck = checkpoints(family)
    params, cfg = ck.params, ck.config
    tokens = _tokens(seed=11)
    mask = jnp.asarray(left_pad_mask(B, T, [0, 3]))
    last = cfg.num_layers - 1
    iv = emojax.Intervention.add(cfg, 0, 2.0 * random_unit(cfg.d_model, 0))  # below `last`
    iv = iv + emojax.Intervention.ablate(cfg, random_unit(cfg.d_model, 1))
    where = jnp.asarray([[T - 1, 0], [5, T - 1]], jnp.int32)
    kw = dict(attention_mask=mask, intervention=iv)
    full = jit_forward()(params, cfg, tokens, **kw)
    expected = np.take_along_axis(np.asarray(full.logits), np.asarray(where)[..., None], 1)

    trimmed = jit_forward()(params, cfg, tokens, logit_positions=where, capture=False, **kw)
    assert trimmed.logits.shape == (B, 2, cfg.vocab_size)
    _close(trimmed.logits, expected, what="all layers")
    alone = jit_forward()(
        params,
        cfg,
        tokens,
        start_layer=last,
        resid=full.resid[last],
        logit_positions=where,
        capture=False,
        **kw,
    )
    _close(alone.logits, expected, what="last layer alone")
