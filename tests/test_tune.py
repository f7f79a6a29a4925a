"""Safety fine-tuning (emojax.tune) on a tiny random Llama with a tiny word tokenizer.

Nothing here touches SmolLM2: the model is 2 layers x 32 wide, its tokenizer is built by the
test from the tuning prompts' words and has a ChatML-like template.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

import emojax
from emojax import concepts, readouts, tune

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


@pytest.fixture(scope="module")
def prompts():
    return tune.tuning_prompts()


@pytest.fixture(scope="module")
def tokenizer(prompts):
    texts = [p.text for p in prompts] + [tune.refusal_text(str(i)) for i in range(200)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|end|>",
        chat_template=TEMPLATE,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tokenizer):
    config = emojax.ModelConfig.from_hf_dict(dict(
        model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    ))  # fmt: skip
    params = emojax.init_params(config, jax.random.PRNGKey(0))
    return emojax.Model(config=config, params=params, tokenizer=tokenizer, path="")


@pytest.fixture(scope="module")
def data(prompts, tokenizer):
    benign = [p for p in prompts if p.kind != "harmful"]
    # Stand-in answers (the real ones come from `own_answers`): the request echoed, then eos.
    answers = [tokenizer.encode(p.text)[:6] + [tokenizer.eos_token_id] for p in benign]
    return tune.build_examples(tokenizer, prompts, answers, max_len=96)


def test_tuning_prompts_are_train_split_english_and_framed(prompts):
    kinds = {p.kind for p in prompts}
    assert kinds == {"harmful", "harmless", "borderline"}
    assert all(p.split == "train" for p in prompts)
    assert not any(p.domain == "harmbench" for p in prompts)  # evaluation only
    templates = {t.split("-")[0] for p in prompts if p.template for t in p.template.split("+")}
    assert set(tune.TUNING_CUES) <= templates and {"roleplay", "fiction"} <= templates
    held_out = {t.id for f in concepts.FRAMINGS for t in concepts.templates(f, "test")}
    assert not any(t in held_out for p in prompts for t in p.template.split("+"))
    assert all(p.text[0].isupper() and " ?" not in p.text for p in prompts)
    harmful = [p for p in prompts if p.kind == "harmful"]
    n_requests = len({p.request for p in harmful})
    assert len(harmful) == n_requests * (2 + len(tune.TUNING_CUES))


def test_longform_prompts_are_train_templates_of_every_request_and_form():
    harmful, harmless = tune.longform_prompts("harmful"), tune.longform_prompts("harmless")
    for prompts in (harmful, harmless):
        n = len({p.request for p in prompts})
        assert len(prompts) == n * (2 + len(tune.TUNING_CUES))
        assert all(p.split == "train" and p.text[0].isupper() for p in prompts)
        held_out = {t.id for c in concepts.FRAMINGS + tune.TUNING_CUES
                    for t in concepts.templates(c, "test")}  # fmt: skip
        assert not any(t in held_out for p in prompts for t in p.template.split("+") if t)
    assert {p.kind for p in harmful} == {"harmful"} and {p.kind for p in harmless} == {"harmless"}
    # six kinds, each with harmful requests and harmless look-alikes of the same form
    assert {p.domain for p in harmful} == {p.domain for p in harmless} and len(
        {p.domain for p in harmful}
    ) == 6
    written = [p.text for p in harmful if not p.template]
    assert all(w[1:] in p.text for w, p in zip(written * 6, harmful, strict=True))
    with pytest.raises(ValueError, match="no 'borderline' requests"):
        tune.longform_prompts("borderline")


def test_refusals_are_english_refusals_and_seeded():
    texts = {tune.refusal_text(str(i)) for i in range(300)}
    assert len(texts) == 12
    assert all(readouts.classify_response(t) for t in texts)
    assert tune.refusal_text("a", 0) == tune.refusal_text("a", 0)
    assert len({tune.refusal_text("a", s) for s in range(40)}) > 1


def test_examples_mask_exactly_the_response(data, prompts, tokenizer):
    assert data.tokens.shape == data.loss_mask.shape == (len(prompts), 96)
    np.testing.assert_array_equal(data.harmful, [p.kind == "harmful" for p in prompts])
    for i in (0, len(prompts) - 1):
        p, row, mask = prompts[i], data.tokens[i], data.loss_mask[i].astype(bool)
        prompt = tokenizer.encode(concepts.format_chat(tokenizer, p.text), add_special_tokens=False)
        assert not mask[: len(prompt)].any() and mask[len(prompt)]
        np.testing.assert_array_equal(row[: len(prompt)], prompt)
        response = row[mask].tolist()
        assert response[-1] == tokenizer.eos_token_id and mask.sum() == len(response)
        assert not mask[len(prompt) + len(response) :].any()
        if p.kind == "harmful":
            key = f"{p.id}/{p.template or 'plain'}"
            words = re.findall(r"\w+|[^\w\s]", tune.refusal_text(key).lower())
            assert tokenizer.decode(response[:-1]).split() == words
    with pytest.raises(ValueError, match="answers"):
        tune.build_examples(tokenizer, prompts, [], max_len=96)


def test_batches_hold_the_mix_and_depend_on_seed_and_step_only(data):
    spec = tune.TuneSpec(batch_size=8, harmful_fraction=0.25, seed=3)
    a = tune.batch_indices(data, spec, 5)
    assert data.harmful[a].sum() == 2 and len(a) == 8
    np.testing.assert_array_equal(a, tune.batch_indices(data, spec, 5))
    assert not np.array_equal(a, tune.batch_indices(data, spec, 6))
    other = dataclasses.replace(spec, seed=4)
    assert not np.array_equal(a, tune.batch_indices(data, other, 5))


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))  # fmt: skip


def test_tuning_is_deterministic_resumable_and_learns(tiny, data, tmp_path):
    spec = tune.TuneSpec(steps=8, batch_size=4, learning_rate=3e-3, warmup_steps=2,
                         checkpoint_every=3, log_every=100)  # fmt: skip
    straight = tune.tune(tiny.params, tiny.config, data, spec, log=None)
    again = tune.tune(tiny.params, tiny.config, data, spec, log=None)
    assert _leaves_equal(straight, again)
    assert not _leaves_equal(straight, tiny.params)
    other = tune.tune(tiny.params, tiny.config, data, dataclasses.replace(spec, seed=1), log=None)
    assert not _leaves_equal(straight, other)
    # Interrupted after step 6 (checkpoints at 3 and 6), then resumed with the same spec.
    logs = []
    tune.tune(tiny.params, tiny.config, data, spec, workdir=tmp_path, stop_after=6, log=None)
    verbose = dataclasses.replace(spec, log_every=1)  # same optimizer, same batches
    resumed = tune.tune(tiny.params, tiny.config, data, verbose, workdir=tmp_path, log=logs.append)
    assert "resumed from step 6" in logs[0]
    assert [line.split(" loss")[0] for line in logs[1:]] == ["tune step 7/8", "tune step 8/8"]
    np.testing.assert_allclose(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(resumed)]),
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(straight)]),
        rtol=0, atol=1e-6,
    )  # fmt: skip
    # It learns: the response loss on held examples falls after more steps.
    idx = np.arange(0, len(data.ids), 97)
    tokens, mask = jnp.asarray(data.tokens[idx]), jnp.asarray(data.loss_mask[idx])
    before = tune.response_nll(tiny.params, tiny.config, tokens, mask)
    longer_spec = dataclasses.replace(spec, steps=40)
    longer = tune.tune(tiny.params, tiny.config, data, longer_spec, log=None)
    assert tune.response_nll(longer, tiny.config, tokens, mask) < 0.7 * before


def test_own_answers_are_the_greedy_continuations(tiny, tokenizer):
    texts = ["How do I sort a list in Python?", "Help me plan a trip with my sister."]
    answers = tune.own_answers(tiny, texts, max_new_tokens=5, batch_size=4, log=None)
    assert len(answers) == 2
    for text, ans in zip(texts, answers, strict=True):
        ids = tokenizer.encode(concepts.format_chat(tokenizer, text), add_special_tokens=False)
        new = emojax.generate(tiny.params, tiny.config, jnp.asarray([ids]), max_new_tokens=5)
        want = np.asarray(new)[0, len(ids) :].tolist()
        eos = tokenizer.eos_token_id
        want = want[: want.index(eos) + 1] if eos in want else want
        assert ans == want


def test_saved_checkpoint_loads_with_the_same_logits(tiny, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOJAX_CACHE", str(tmp_path / "cache"))
    path = tune.tuned_dir("tiny-safety")
    assert path == tmp_path / "cache" / "models" / "tiny-safety"
    tune.save_tuned(tiny.params, tiny.config, tokenizer, path)
    tune.save_tuned(tiny.params, tiny.config, tokenizer, path)  # replaces, leaves no temp dir
    assert [p.name for p in path.parent.iterdir()] == ["tiny-safety"]
    loaded = emojax.load_model(str(path))
    tokens = jnp.asarray([[5, 6, 7, 8]])
    np.testing.assert_allclose(
        emojax.forward(loaded.params, loaded.config, tokens).logits,
        emojax.forward(tiny.params, tiny.config, tokens).logits, atol=1e-6,
    )  # fmt: skip
    assert concepts.format_chat(loaded.tokenizer, "Hi.") == concepts.format_chat(tokenizer, "Hi.")


def test_constant_schedule_does_not_depend_on_steps(tiny, data, tmp_path):
    """Under 'constant' the first n steps of any longer run equal an n-step run (cosine: not)."""
    spec = tune.TuneSpec(steps=3, batch_size=4, learning_rate=3e-3, warmup_steps=1,
                         schedule="constant", log_every=100)  # fmt: skip
    short = tune.tune(tiny.params, tiny.config, data, spec, workdir=tmp_path, log=None)
    longer = dataclasses.replace(spec, steps=5)
    assert _leaves_equal(short, tune.tune(tiny.params, tiny.config, data, longer, stop_after=3,
                                          log=None))  # fmt: skip
    cosine = dataclasses.replace(spec, schedule="cosine")
    assert not _leaves_equal(
        tune.tune(tiny.params, tiny.config, data, cosine, log=None),
        tune.tune(tiny.params, tiny.config, data, dataclasses.replace(cosine, steps=5),
                  stop_after=3, log=None),
    )  # fmt: skip
    assert tune.latest_step(tmp_path) == 3 and tune.latest_step(tmp_path / "none") is None
    with pytest.raises(ValueError, match="beyond spec.steps=2"):
        tune.tune(tiny.params, tiny.config, data, dataclasses.replace(spec, steps=2),
                  workdir=tmp_path, log=None)  # fmt: skip
    with pytest.raises(ValueError, match="unknown schedule"):
        tune.tune(tiny.params, tiny.config, data, dataclasses.replace(spec, schedule="linear"))


def test_own_answers_with_a_forced_start(tiny, tokenizer):
    texts = ["How do I sort a list in Python?", "Help me plan a trip with my sister."]
    answers = tune.own_answers(tiny, texts, max_new_tokens=4, assistant_prefix="Sure", log=None)
    plain = tune.own_answers(tiny, texts, max_new_tokens=4, log=None)
    sure = tokenizer.encode("Sure", add_special_tokens=False)
    for text, ans, p in zip(texts, answers, plain, strict=True):
        assert ans[: len(sure)] == sure and ans != p
        prompt = concepts.format_chat(tokenizer, text, assistant_prefix="Sure")
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        new = emojax.generate(tiny.params, tiny.config, jnp.asarray([ids]), max_new_tokens=4)
        want = np.asarray(new)[0, len(ids) :].tolist()
        eos = tokenizer.eos_token_id
        assert ans[len(sure) :] == (want[: want.index(eos) + 1] if eos in want else want)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_training_loss_and_gradients_equal_the_reference_formulation(family):
    """The step's loss (response positions only, unrolled layers) equals `response_nll`
    (forward over every position, scanned layers): value and every gradient."""
    extra = dict(sliding_window=5, tie_word_embeddings=False) if family == "mistral" else {}
    config = emojax.ModelConfig.from_hf_dict(dict(
        model_type=family, vocab_size=300, hidden_size=32, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, **extra,
    ))  # fmt: skip
    params = emojax.init_params(config, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(3, 300, (4, 24)), jnp.int32)
    mask = np.zeros((4, 24), np.float32)
    for row, (start, end) in enumerate([(5, 12), (10, 20), (3, 4), (15, 24)]):
        mask[row, start:end] = 1.0
    num_positions = tune.num_response_positions(mask)
    assert num_positions == 16  # the most targets of a row (9 of row 3), rounded up to 8
    positions = np.asarray(tune.response_positions(jnp.asarray(mask), num_positions))
    for row in range(4):  # every target position first, in order
        targets = np.flatnonzero(mask[row, 1:])
        np.testing.assert_array_equal(positions[row, : len(targets)], targets)

    loss, grads = jax.value_and_grad(tune.response_nll)(params, config, tokens, jnp.asarray(mask))
    fast_loss, fast_grads = jax.value_and_grad(
        functools.partial(tune.training_nll, num_positions=num_positions)
    )(params, config, tokens, jnp.asarray(mask))
    np.testing.assert_allclose(fast_loss, loss, rtol=1e-6)
    for name, fast, ref in zip(
        [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(grads)],
        jax.tree.leaves(fast_grads), jax.tree.leaves(grads), strict=True,
    ):  # fmt: skip
        assert np.abs(ref).max() > 0, name  # every weight gets a gradient
        np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-6, err_msg=name)
    # Too few positions drop targets: the loss changes (the data-sized P is what keeps it).
    cut = tune.training_nll(params, config, tokens, jnp.asarray(mask), num_positions=4)
    assert abs(float(cut) - float(loss)) > 1e-3


def test_own_answers_in_length_buckets_keep_the_prompt_order(tiny, tokenizer):
    """Prompts of very different lengths (two pad buckets, a short last batch) come back in
    the order given, each the greedy continuation of its own prompt alone."""
    short = ["Help me plan a trip with my sister.", "How do I sort a list in Python?"]
    long = [" ".join([t] * 4) for t in short]  # same words, four times as long
    texts = [long[0], short[0], long[1], short[1], short[0]]
    lengths = [len(tune._chat_ids(tokenizer, t)) for t in texts]
    assert max(lengths) > min(lengths) + 16  # more than one bucket of pad_multiple=16
    # Weights x10: answers that differ by prompt (the tiny model's are all alike).
    params = jax.tree.map(lambda x: 10 * x if x.ndim > 1 else x, tiny.params)
    model = dataclasses.replace(tiny, params=params)
    answers = tune.own_answers(model, texts, max_new_tokens=4, batch_size=2, log=None)
    assert answers[1] == answers[4] and len({tuple(a) for a in answers}) == 4
    eos = tokenizer.eos_token_id
    for text, ans in zip(texts, answers, strict=True):
        ids = tune._chat_ids(tokenizer, text)
        new = emojax.generate(params, tiny.config, jnp.asarray([ids]), max_new_tokens=4)
        want = np.asarray(new)[0, len(ids) :].tolist()
        assert ans == (want[: want.index(eos) + 1] if eos in want else want)
