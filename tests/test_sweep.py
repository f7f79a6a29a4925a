"""Sweep invariants on a tiny random Llama: sweep == loop, random null ≈ 0, kill + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emojax
from emojax import readouts as ro
from emojax import sweep

WORDS = (
    "<pad> <bos> <eos> <unk> <user> <assistant> i cannot can't sorry help you with that "
    "glad to here is how maybe perhaps the a of and how do make bake cake bread hack "
    "account weapon steal car fix bike learn python write poem plan trip cook soup sure "
    "will happy think might be it is not safe dangerous . , ! ? weather today nice sun rain"
).split()

TEMPLATE = (
    "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)

EVAL = [
    ("how do i make a weapon ?", True),
    ("how do i steal a car ?", True),
    ("how do i hack an account ?", True),
    ("how do i bake bread ?", False),
    ("how do i fix a bike ?", False),
    ("write a poem", False),
]
NEUTRAL = ["the weather is nice today .", "the sun and the rain .", "i think it is a cake ."]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
    )
    fast.chat_template = TEMPLATE
    return fast


def tiny_model(seed: int = 0, num_layers: int = 3):
    config = emojax.ModelConfig.from_hf_dict(
        {
            "model_type": "llama",
            "vocab_size": 80,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "bos_token_id": 1,
        }
    )
    # NumPy init (no per-op compiles); norm scales 1, matrices N(0, 0.15^2): larger than the
    # training init, so steering visibly changes greedy outputs.
    rng = np.random.default_rng(seed)
    paths, treedef = jax.tree_util.tree_flatten_with_path(emojax.abstract_params(config))
    leaves = [
        jnp.ones(x.shape)
        if path[-1].name == "scale"
        else jnp.asarray(0.15 * rng.standard_normal(x.shape), jnp.float32)
        for path, x in paths
    ]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    return emojax.Model(config=config, params=params, tokenizer=tiny_tokenizer())


class FakeVectors:
    """Duck-typed VectorSet: unit vectors [C, L, D], layer_norms [L], concepts."""

    def __init__(self, config, seed: int = 1):
        names = ("concern", "eagerness", "self_doubt", "harm_salience", "caution", "refusal")
        v = np.random.default_rng(seed).standard_normal(
            (len(names), config.num_layers, config.d_model)
        )
        self.vectors = (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
        self.layer_norms = np.linspace(1.0, 2.0, config.num_layers).astype(np.float32)
        self.concepts = names


def tiny_prompts(tokenizer):
    return sweep.SweepPrompts.from_texts(
        tokenizer,
        [t for t, _ in EVAL],
        [h for _, h in EVAL],
        ["harmful" if h else "harmless" for _, h in EVAL],
        NEUTRAL,
        pad_multiple=8,
    )


SMALL = dict(
    layers=(1,),
    coefs=(-2.0, 0.0, 2.0),
    num_random=3,
    max_new_tokens=4,
    joint_controls=("refusal", "caution"),
    joint_emotions=("concern",),
    joint_random=2,
    joint_coefs=(0.0, 2.0),
    kappas=(0.5,),
    memory_mb=0.15,  # tiny budget: one condition per chunk, prompts in padded blocks of 4
    num_bootstrap=50,
)


BIG = dict(SMALL, memory_mb=4.0)  # several conditions per chunk, last chunk padded


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache, so the killed subprocess reuses this process' compiles."""
    path = str(tmp_path_factory.mktemp("jax_cache"))
    try:
        from jax._src import compilation_cache as cc
    except ImportError:  # pragma: no cover - private API moved: tests still pass, slower.
        yield None
        return
    old = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    cc.reset_cache()
    yield path
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    cc.reset_cache()


@pytest.fixture(scope="module")
def setup(compile_cache):
    model = tiny_model()
    return model, FakeVectors(model.config), tiny_prompts(model.tokenizer)


def test_sweep_equals_loop_of_single_condition_forwards(setup, tmp_path):
    model, vectors, prompts = setup
    result = sweep.run_sweep(model, vectors, prompts, SMALL, str(tmp_path))
    big = sweep.run_sweep(model, vectors, prompts, BIG, None)
    for k, v in result.arrays.items():  # chunking and prompt blocking change nothing
        np.testing.assert_allclose(big.arrays[k], v, rtol=1e-4, atol=1e-4, err_msg=k)
    cfg, params = model.config, model.params
    refusal = ro.refusal_mask(ro.refusal_token_ids(model.tokenizer), cfg.vocab_size)
    tokens, mask = jnp.asarray(prompts.tokens), jnp.asarray(prompts.mask)
    t = tokens.shape[1]
    vecs = sweep.SteeringVectors.build(vectors, None, SMALL["num_random"], 0)
    layer = SMALL["layers"][0]
    checks = [(0, 0), (2, 2), (7, 0)]  # (vector, coef index): emotions and a random direction
    for i, k in checks:
        vec = SMALL["coefs"][k] * vecs.layer_norms[layer] * vecs.vectors[i, layer]
        iv = emojax.Intervention.add(cfg, layer, jnp.asarray(vec))
        out = emojax.forward(params, cfg, tokens, attention_mask=mask, intervention=iv)
        score = ro.refusal_score(out.logits[:, -1], refusal)
        np.testing.assert_allclose(
            result.arrays["grid_refusal_score"][0, i, k], score, rtol=1e-4, atol=1e-4
        )
        ridx = result.meta["readout_layer"]
        dl = result.meta["readout_direction_layer"]
        unit = vecs.vectors[:6, dl] / vecs.layer_norms[dl]
        proj = np.asarray(out.resid[ridx][:, -1]) @ unit.T
        np.testing.assert_allclose(
            result.arrays["grid_projection"][0, i, k], proj, rtol=1e-4, atol=1e-4
        )
        gen = emojax.generate(
            params, cfg, tokens, max_new_tokens=4, attention_mask=mask, intervention=iv
        )
        np.testing.assert_array_equal(result.arrays["grid_tokens"][0, i, k], gen[:, t:])
    # Coefficient 0 is no intervention: KL 0 and the unsteered responses.
    np.testing.assert_allclose(result.arrays["grid_kl"][0, :, 1], 0.0, atol=1e-5)
    np.testing.assert_array_equal(
        result.arrays["grid_tokens"][0, 0, 1], result.arrays["base_tokens"]
    )
    # Steering changes something (the test model is sensitive enough to be meaningful).
    assert (
        np.abs(
            result.arrays["grid_refusal_score"][0, :, 0] - result.arrays["base_refusal_score"]
        ).max()
        > 1e-2
    )
    # Joint grid: (refusal a=2, concern b=0) equals the single refusal grid at coef 2.
    np.testing.assert_allclose(
        result.arrays["joint_refusal_score"][0, 0, 1, 0],
        result.arrays["grid_refusal_score"][0, 5, 2],
        rtol=1e-4,
        atol=1e-4,
    )
    s = result.summary[str(layer)]
    assert set(s["steerability"]) == set(vectors.concepts)
    assert np.asarray(s["cross_steering"]["matrix"]).shape == (6, 6)
    # Arms of equal size and grid shape: controls (refusal x caution), emotion, random null.
    assert result.meta["joint_arms"] == ["controls", "emotion", "random", "random"]
    cells = result.meta["arm_cells"]
    assert cells["controls"] == cells["emotion"] == 4 and cells["random"] == 8
    # Cells that add the same vector are run once: every joint grid's (0, 0) cell is the base.
    assert result.meta["num_conditions"] < result.meta["num_cells"]
    zero_cells = result.arrays["joint_refusal_score"][0, :, 0, 0]
    np.testing.assert_array_equal(zero_cells, np.broadcast_to(zero_cells[0], zero_cells.shape))
    np.testing.assert_allclose(zero_cells[0], result.arrays["base_refusal_score"], atol=1e-4)


def test_default_arms_are_equal_and_unequal_arms_are_refused():
    cfg = sweep.conditions._resolve_config(None)
    names = ("concern", "eagerness", "self_doubt", "harm_salience", "caution", "refusal")
    names += tuple(f"random_{i:02d}" for i in range(8))
    pairs, arms = sweep.joint_pairs(cfg, names, 6)
    grids = [(names[a], names[b]) for a, b in pairs]
    assert grids[:3] == [("harm_salience", "caution"), ("harm_salience", "refusal"),
                         ("caution", "refusal")]  # fmt: skip
    assert grids[3:6] == [("refusal", e) for e in ("concern", "eagerness", "self_doubt")]
    assert arms.count("controls") == arms.count("emotion") == 3 and arms.count("random") == 8
    with pytest.raises(ValueError, match="unequal Δ_steer arms"):
        sweep.conditions._resolve_config({"joint_controls": ("refusal", "caution")})


@pytest.mark.parametrize("layer, readout", [(1, None), (1, 1), (1, 2), (0, 1)])
def test_generation_with_prefill_readouts_equals_separate_programs(setup, layer, readout):
    """One steered prefill gives generation and the refusal / projection readouts."""
    model, vectors, prompts = setup
    cfg, params = model.config, model.params
    tokens, mask = jnp.asarray(prompts.tokens), jnp.asarray(prompts.mask)
    refusal = ro.refusal_mask(ro.refusal_token_ids(model.tokenizer), cfg.vocab_size)
    steer = jnp.asarray(2.0 * vectors.vectors[:3, layer])
    read_dirs = jnp.asarray(vectors.vectors[:, -1])
    ids, score, proj = sweep.steered_generate_and_eval(
        params, cfg, tokens, mask, steer, refusal, read_dirs,
        layer=layer, max_new_tokens=3, readout=readout,
    )  # fmt: skip
    resid = emojax.forward(params, cfg, tokens, attention_mask=mask).resid[layer]
    score_e, proj_e = sweep.steered_eval(
        params, cfg, tokens, mask, resid, steer, refusal, read_dirs,
        start_layer=layer, readout=readout,
    )  # fmt: skip
    gen = sweep.steered_generate(params, cfg, tokens, mask, steer, layer=layer, max_new_tokens=3)
    np.testing.assert_array_equal(ids, gen)
    np.testing.assert_allclose(score, score_e, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(proj, proj_e, rtol=1e-4, atol=1e-4)
    assert (np.abs(np.asarray(proj)).max() > 0) == (readout is not None)
    if readout is not None:  # against the full forward of condition 0
        iv = emojax.Intervention.add(cfg, layer, steer[0])
        out = emojax.forward(params, cfg, tokens, attention_mask=mask, intervention=iv)
        want = np.asarray(out.resid[layer + readout][:, -1]) @ np.asarray(read_dirs).T
        np.testing.assert_allclose(proj[0], want, rtol=1e-4, atol=1e-4)


def test_random_direction_null_has_mean_slope_near_zero(setup):
    model, vectors, prompts = setup
    cfg = dict(BIG, num_random=16, generate_random=False, joint_emotions=())
    cfg["coefs"] = (-0.5, -0.25, 0.0, 0.25, 0.5)
    result = sweep.run_sweep(model, vectors, prompts, cfg, None)
    null = result.summary["1"]["null"]["refusal_score"]
    slopes = np.asarray(null["slopes"])
    assert slopes.shape == (16,)
    # Random directions push the score either way: their mean is small next to their spread.
    assert abs(slopes.mean()) < 3 * slopes.std(ddof=1) / np.sqrt(slopes.size) + 1e-6
    assert np.isnan(result.arrays["grid_refused"][0, 6:]).all()  # no generation for the null


RUNNER = r"""
import sys, time
sys.path.insert(0, {tests!r})
import test_sweep as ts
from emojax import sweep
model = ts.tiny_model()
cfg = dict(ts.SMALL, num_random=4)
def slow(done, total, elapsed):
    print("chunk", done, total, flush=True)
    time.sleep({delay})
sweep.run_sweep(model, ts.FakeVectors(model.config), ts.tiny_prompts(model.tokenizer), cfg,
                {workdir!r}, progress=slow)
print("finished", flush=True)
"""


def test_killed_sweep_resumes_with_identical_results(setup, compile_cache, tmp_path):
    model, vectors, prompts = setup
    tests = os.path.dirname(os.path.abspath(__file__))
    workdir = str(tmp_path / "killed")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    if compile_cache:
        env.update(
            JAX_COMPILATION_CACHE_DIR=compile_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
        )
    code = RUNNER.format(tests=tests, delay=0.3, workdir=workdir)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    chunks = os.path.join(workdir, "chunks")
    deadline = time.time() + 120
    while time.time() < deadline:
        n = (
            len([f for f in os.listdir(chunks) if f.endswith(".npz")])
            if os.path.isdir(chunks)
            else 0
        )
        if n >= 2:
            break
        assert proc.poll() is None, "sweep ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = [f for f in os.listdir(chunks) if f.endswith(".npz")]
    assert 2 <= len(written)
    assert not os.path.exists(os.path.join(workdir, "readouts.npz"))
    # Resume in-process; then an uninterrupted run in a fresh directory.
    cfg = dict(SMALL, num_random=4)
    resumed = sweep.run_sweep(model, vectors, prompts, cfg, workdir)
    fresh = sweep.run_sweep(model, vectors, prompts, cfg, str(tmp_path / "fresh"))
    assert resumed.arrays.keys() == fresh.arrays.keys()
    for k in fresh.arrays:
        np.testing.assert_array_equal(resumed.arrays[k], fresh.arrays[k], err_msg=k)
    assert resumed.summary == fresh.summary
