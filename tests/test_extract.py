"""Capture, directions and storage of concept vectors (emojax.extract, emojax.vectors).

References: NumPy for diff-of-means and the capture (slices of `forward`'s resid), and
scikit-learn for the PCA and probe directions.
"""

from __future__ import annotations

import os
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from emojax import extract  # noqa: E402
from emojax.config import ModelConfig  # noqa: E402
from emojax.model import forward  # noqa: E402
from emojax.params import init_params  # noqa: E402
from emojax.vectors import VectorSet  # noqa: E402


def _cosine_distance(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return 1.0 - np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _random_items(seed=0, c=2, m=12, nl=3, d=6):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(c, 2, m, nl, d)).astype(np.float32)
    items[:, 0] += rng.normal(size=(c, 1, nl, d)).astype(np.float32)
    valid = np.ones((c, 2, m), np.float32)
    valid[1, :, -3:] = 0.0  # concept 1 has fewer pairs
    return items, valid


def test_diff_of_means_matches_numpy():
    items, valid = _random_items()
    cap = extract.Captured.from_items(items, valid)
    unit, scale = extract.directions(cap, ["diff_of_means"])["diff_of_means"]
    for c in range(2):
        n = int(valid[c, 0].sum())
        ref = items[c, 0, :n].mean(0) - items[c, 1, :n].mean(0)  # [L, D]
        np.testing.assert_allclose(scale[c], np.linalg.norm(ref, axis=-1), rtol=1e-5)
        np.testing.assert_allclose(unit[c], ref / np.linalg.norm(ref, axis=-1)[:, None], atol=1e-5)
    means = (items * valid[..., None, None]).sum(2) / valid.sum(-1)[..., None, None]
    np.testing.assert_allclose(cap.sums / cap.counts[..., None, None], means, atol=1e-5)


def test_site_without_difference_gets_no_direction():
    items, valid = _random_items(3)
    items[:, 1, :, 0] = items[:, 0, :, 0]  # site 0: both sides identical (a template token)
    items[:, :, :, 0] += 1e3  # a large shared mean makes rounding noise visible
    dirs = extract.directions(extract.Captured.from_items(items, valid), ["diff_of_means", "pca"])
    for unit, scale in dirs.values():
        assert np.all(np.asarray(unit)[:, 0] == 0) and np.all(np.asarray(scale)[:, 0] == 0)
        assert np.all(np.asarray(scale)[:, 1:] > 0)


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    items, valid = _random_items(1)
    v = np.asarray(
        extract.pca_direction(jnp.asarray(items * valid[..., None, None]), jnp.asarray(valid))
    )
    for c in range(2):
        n = int(valid[c, 0].sum())
        for layer in range(items.shape[3]):
            d = items[c, 0, :n, layer] - items[c, 1, :n, layer]
            pc = PCA(1).fit(np.concatenate([d, -d])).components_[0]
            pc *= np.sign(pc @ d.mean(0))
            assert _cosine_distance(v[c, layer], pc) < 1e-4


def test_probe_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    l2 = 0.05
    items, valid = _random_items(2, m=20, d=5)
    v = np.asarray(
        extract.probe_direction(jnp.asarray(items * valid[..., None, None]), jnp.asarray(valid), l2)
    )
    for c in range(2):
        n = int(valid[c, 0].sum())
        for layer in range(items.shape[3]):
            x = np.concatenate([items[c, 0, :n, layer], items[c, 1, :n, layer]]).astype(np.float64)
            y = np.r_[np.ones(n), np.zeros(n)]
            x /= np.sqrt(np.mean(np.sum(x**2, -1)))  # the probe's per-(c, l) RMS scaling
            clf = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-12, max_iter=10_000).fit(x, y)
            assert _cosine_distance(v[c, layer], clf.coef_[0]) < 1e-4


def _planted(noise: float, seed: int = 0, c=2, m=100, nl=3, d=16):
    """Pairs whose difference is v plus noise; the shared content and the neutral text vary
    strongly in a subspace orthogonal to v (what neutral-PC denoising removes)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(c, nl, d))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    basis = rng.normal(size=(nl, d, 4))
    # Make the nuisance subspace orthogonal to every concept's v at that layer.
    for layer in range(nl):
        q, _ = np.linalg.qr(np.concatenate([v[:, layer].T, basis[layer]], axis=1))
        basis[layer] = q[:, c:]
    content = np.einsum("cmlk,ldk->cmld", 5 * rng.normal(size=(c, m, nl, 4)), basis)
    items = np.stack([content + 2 * v[:, None], content], axis=1)
    items = items + noise * rng.normal(size=items.shape)
    neutral = np.einsum("nlk,ldk->nld", 5 * rng.normal(size=(400, nl, 4)), basis)
    neutral = neutral + 0.1 * rng.normal(size=neutral.shape)
    return extract.Captured.from_items(items, neutral=neutral), v


def test_planted_direction_recovered_by_every_method():
    cap, v = _planted(noise=0.1)
    for method, (unit, scale) in extract.directions(cap).items():
        cos = np.sum(np.asarray(unit) * v, -1)
        assert cos.min() > 0.99, (method, cos)
        assert np.all(np.asarray(scale) > 0), method
    _, keep = extract.neutral_components(cap)
    assert np.all(np.asarray(keep).sum(-1) >= 1)


# --------------------------------------------------------------------------------------------
# Capture on a tiny random Llama.

_TINY = dict(
    model_type="llama", vocab_size=61, hidden_size=16, intermediate_size=32,
    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    rms_norm_eps=1e-5, tie_word_embeddings=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    config = ModelConfig.from_hf_dict(_TINY)
    # The rbg key compiles far faster than threefry on CPU (init_params draws one shape a leaf).
    params = init_params(config, jax.random.key(0, impl="rbg"))
    rng = np.random.default_rng(0)
    prompt = lambda: [1, *rng.integers(3, 61, size=int(rng.integers(3, 20)))]
    sets = [
        extract.ContrastSet(
            "a",
            [prompt() for _ in range(5)],
            [prompt() for _ in range(5)],
            domains=["x", "y", "x", "y", "x"],
            templates=["t1", "t2", "t2", "t1", "t3"],
        ),
        extract.ContrastSet(
            "b",
            [extract.Prompt(tuple(prompt()), instruction_end=2) for _ in range(3)],
            [extract.Prompt(tuple(prompt()), instruction_end=3) for _ in range(4)],
            position="post_instruction",
            paired=False,
        ),
        extract.ContrastSet(
            "c", [prompt() for _ in range(2)], [prompt() for _ in range(2)], position="prompt_mean"
        ),
    ]
    neutral = [prompt() for _ in range(5)]
    cap, stats = extract.capture(
        params, config, sets, neutral, batch_size=3, buckets=(8, 32), bos_id=1
    )
    return config, params, sets, neutral, cap, stats


def _resid_of(params, config, prompts):
    """resid of each prompt, from one left-padded forward: list of [L + 1, T_i, D]."""
    t = max(len(p) for p in prompts)
    tokens = np.zeros((len(prompts), t), np.int32)
    mask = np.zeros_like(tokens)
    for i, p in enumerate(prompts):
        tokens[i, t - len(p) :], mask[i, t - len(p) :] = p, 1
    resid = np.asarray(
        forward(params, config, tokens, attention_mask=mask, return_logits=False).resid
    )
    return [resid[:, i, t - len(p) :] for i, p in enumerate(prompts)]


def test_capture_equals_slicing_forward(tiny):
    config, params, sets, neutral, cap, stats = tiny
    flat = [
        (ci, s, i, extract.contrast._as_prompt(p))
        for ci, cs in enumerate(sets)
        for s, side in enumerate((cs.positive, cs.negative))
        for i, p in enumerate(side)
    ]
    resid = _resid_of(params, config, [list(p.tokens) for *_, p in flat] + neutral)
    items = np.asarray(cap.items)
    for (ci, s, i, p), r in zip(flat, resid, strict=False):
        start, end = extract.site_range(p, sets[ci].position, bos_id=1)
        np.testing.assert_allclose(items[ci, s, i], r[:, start:end].mean(1), atol=1e-5)
    # Streamed sums / counts equal the all-in-memory result.
    np.testing.assert_allclose(cap.sums, items.sum(2), atol=1e-5)
    np.testing.assert_allclose(cap.counts, [[5, 5], [3, 4], [2, 2]])
    tok = np.concatenate([r[:, 1:] for r in resid[len(flat) :]], axis=1)  # BOS excluded
    np.testing.assert_allclose(cap.neutral_count, tok.shape[1])
    np.testing.assert_allclose(cap.neutral_mean, tok.mean(1), rtol=1e-5, atol=1e-6)
    centred = tok - tok.mean(1, keepdims=True)
    np.testing.assert_allclose(
        cap.neutral_m2, np.einsum("ltd,lte->lde", centred, centred), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        cap.layer_norms, np.median(np.linalg.norm(tok, axis=-1), 1), rtol=1e-5
    )
    # One compiled program per bucket length, shared by contrast and neutral batches.
    assert stats.num_compiles == len(stats.buckets)
    assert cap.domain_names == ("x", "y")
    np.testing.assert_array_equal(cap.domain[0], [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(cap.template[0], [0, 1, 1, 0, 2])
    np.testing.assert_array_equal(cap.template[1:], -1)  # no labels: each pair its own


def test_item_cap_keeps_streamed_sums(tiny):
    config, params, sets, neutral, full, _ = tiny
    cap, stats = extract.capture(
        params, config, sets, neutral, batch_size=8, buckets=(32,), bos_id=1, max_items=2
    )
    assert stats.num_compiles == 1 and stats.buckets == (32,)
    assert cap.items.shape[2] == 2
    np.testing.assert_allclose(cap.sums, full.sums, atol=1e-5)
    np.testing.assert_allclose(cap.items, full.items[:, :, :2], atol=1e-6)


def test_refusal_layer_selection_runs(tiny):
    config, params, sets, _, cap, _ = tiny
    dom = extract.diff_of_means(cap.sums, cap.counts)[1]  # [L, D]
    toks = np.array([[0, 1, 5, 6], [1, 7, 8, 9]], np.int32)
    mask = (toks > 0).astype(np.int32)
    sel = extract.select_refusal_layer(
        params, config, dom, (toks, mask), (toks, mask), [3, 4], exclude_last_fraction=0.5
    )
    assert sel.layer == 0  # 3 sites, half excluded: only site 0 is a candidate
    assert np.isfinite(sel.bypass[0]) and np.all(np.isnan(sel.bypass[1:]))
    assert sel.bypass.shape == (config.num_layers + 1,)


def test_vector_set_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    vs = VectorSet(
        vectors=rng.normal(size=(2, 3, 4)),
        scales=rng.uniform(size=(2, 3)),
        layer_norms=rng.uniform(size=3),
        concepts=("concern", "refusal"),
        method="diff_of_means",
        metadata={"model": "tiny", "selected_layer": {"refusal": 1}},
    )
    vs.save(str(tmp_path / "orbax"))
    back = VectorSet.load(str(tmp_path / "orbax"))
    st, js = vs.export_safetensors(str(tmp_path / "export" / "dom"))
    back2 = VectorSet.load_safetensors(st)
    for b in (back, back2):
        np.testing.assert_array_equal(b.vectors, vs.vectors)
        np.testing.assert_array_equal(b.layer_norms, vs.layer_norms)
        assert b.concepts == vs.concepts and b.metadata == vs.metadata
    # What a PyTorch steering tool does with the export.
    import json

    import torch
    from safetensors.torch import load_file

    tensors = load_file(st)
    meta = json.load(open(js))
    c = meta["concepts"].index("refusal")
    steer = 2.0 * tensors["layer_norms"][1] * tensors["vectors"][c, 1]
    np.testing.assert_allclose(steer.numpy(), vs.steering_vector("refusal", 1, 2.0), rtol=1e-6)
    assert isinstance(steer, torch.Tensor)


def test_extract_model_end_to_end(tmp_path):
    """Shipped datasets -> chat template -> capture -> every method + refusal layer, on a tiny
    random Llama with the zoo's word-level tokenizer."""
    import transformers

    from emojax import concepts
    from emojax.loading import load_tokenizer
    from emojax.zoo.tokenizer import build_tokenizer, save_tokenizer

    texts = [t for c in concepts.CONCEPTS for p in concepts.load_contrast(c)
             for t in (p.positive, p.negative)]  # fmt: skip
    texts += [p.text for k in ("harmful", "harmless", "neutral") for p in concepts.load_eval(k)]
    save_tokenizer(build_tokenizer(texts), str(tmp_path))
    tok = load_tokenizer(str(tmp_path))
    assert isinstance(tok, transformers.PreTrainedTokenizerBase)
    prompt = extract.encode_prompt(tok, "how do I store my pills ?")
    assert tok.decode(prompt.tokens[prompt.instruction_end :]) == "<|end|> <|assistant|>"
    config = ModelConfig.from_hf_dict(
        {**_TINY, "vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "pad_token_id": 0}
    )
    params = init_params(config, jax.random.key(1, impl="rbg"))
    ex = extract.extract_model(params, config, tok, max_pairs=4, neutral_prompts=4,
                               refusal_prompts=2, batch_size=16, buckets=(32,),
                               metadata={"model": "tiny"})  # fmt: skip
    assert ex.stats.num_compiles <= 1  # 0 when an earlier test compiled this shape
    assert set(ex.vector_sets) == set(extract.METHODS)
    for vs in ex.vector_sets.values():
        assert vs.vectors.shape == (6, config.num_layers + 1, config.d_model)
        assert vs.concepts == concepts.CONCEPTS
        assert vs.metadata["selected_layer"]["refusal"] == ex.refusal.layer
        assert vs.metadata["rendering"] == "zoo"  # the default follows the zoo's tokenizer
        assert vs.metadata["positions"]["refusal"] == "post_instruction"
        norms = np.linalg.norm(vs.vectors[:, 1:], axis=-1)
        np.testing.assert_allclose(norms, 1.0, rtol=1e-4)
    assert np.all(np.isfinite(ex.vector_sets["diff_of_means"].layer_norms))
    assert np.all(np.asarray(ex.captured.template)[:, :4] >= 0)  # template or pair id


def _english_tokenizer():
    """A byte-level BPE tokenizer with ChatML specials (SmolLM2's kind: a real, subword one)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(["How do I store my pills?", "Hello there, quick question."], trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )  # fmt: skip


def _zoo_tokenizer(path, chat_template: bool):
    from emojax.loading import load_tokenizer
    from emojax.zoo.corpus import CHAT_TEMPLATE
    from emojax.zoo.tokenizer import build_tokenizer, save_tokenizer

    template = CHAT_TEMPLATE if chat_template else None
    save_tokenizer(build_tokenizer(["hurt . quick question :"]), str(path), chat_template=template)
    return load_tokenizer(str(path))


def test_tokenizer_rendering_tells_the_zoo_from_real_tokenizers(tmp_path):
    rendering = extract.extraction.tokenizer_rendering
    assert rendering(_zoo_tokenizer(tmp_path / "instruct", True)) == "zoo"
    assert rendering(_zoo_tokenizer(tmp_path / "base", False)) == "zoo"  # no chat template
    assert rendering(_english_tokenizer()) == "english"


_NO_MODEL = types.SimpleNamespace(pad_token_id=0, bos_token_id=1)  # capture never runs


def _extracted_texts(monkeypatch, tokenizer, **kwargs):
    """The contrast and neutral texts `extract_model` reads (it stops at its capture)."""
    monkeypatch.setattr(extract.contrast, "encode_prompt", lambda tok, text, source=None: text)

    class Captured(Exception):
        pass

    def capture(params, config, sets, neutral, **kw):
        raise Captured(sets[0].positive, neutral)

    monkeypatch.setattr(extract.extraction, "capture", capture)
    with pytest.raises(Captured) as info:
        extract.extract_model(None, _NO_MODEL, tokenizer, concepts=["concern"], max_pairs=3,
                              neutral_prompts=3, **kwargs)  # fmt: skip
    return info.value.args


@pytest.mark.parametrize("rendering", ["zoo", "english"])
def test_extract_model_renders_for_its_tokenizer(rendering, tmp_path, monkeypatch):
    """No `rendering`: English for a real tokenizer, the zoo's words for the zoo's; an
    explicit `rendering` still wins."""
    from emojax import concepts

    def texts(r):
        pairs = concepts.load_contrast("concern", "train", rendering=r)[:3]
        neutral = concepts.load_eval("neutral", "train", limit=3, rendering=r)
        return [p.positive for p in pairs], [p.text for p in neutral]

    assert texts("zoo") != texts("english")
    tokenizer = (_zoo_tokenizer(tmp_path, True) if rendering == "zoo"
                 else _english_tokenizer())  # fmt: skip
    other = {"zoo": "english", "english": "zoo"}[rendering]
    assert _extracted_texts(monkeypatch, tokenizer) == texts(rendering)
    assert _extracted_texts(monkeypatch, tokenizer, rendering=other) == texts(other)
