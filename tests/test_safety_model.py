"""The tuned endpoint's recipe (emojax.safety_model) on a tiny random Llama, offline.

The base model is 2 layers x 32 wide with a word tokenizer built from the tuning prompts (as
in tests/test_tune.py); HarmBench is replaced by a few of the project's test-split harmful
requests, so nothing here touches the network, the real cache or SmolLM2.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

import emojax
from emojax import concepts, safety_model, tune
from emojax import models as registry

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
RECIPE = safety_model.SafetyRecipe(
    base="tiny",
    spec=tune.TuneSpec(
        steps=4,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=1,
        schedule="constant",
        checkpoint_every=2,
        log_every=1,
    ),
    max_len=96,
    n_answers=6,
    n_longform_answers=4,
    answer_tokens=4,
    eval_tokens=4,
)


@pytest.fixture(scope="module")
def tiny():
    texts = [p.text for p in tune.tuning_prompts()] + ["Sure, here is how."]
    texts += [tune.refusal_text(str(i)) for i in range(200)]
    texts += [
        p.text
        for k in ("harmful", "harmless", "borderline")
        for p in concepts.load_eval(k, "test", rendering="english")
    ]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|end|>",
        chat_template=TEMPLATE,
    )
    config = emojax.ModelConfig.from_hf_dict(
        dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
    )
    params = emojax.init_params(config, jax.random.PRNGKey(0))
    return emojax.Model(config=config, params=params, tokenizer=tokenizer, path="")


@pytest.fixture(scope="module")
def sets():
    """Stand-in evaluation sets: held-out (test-split) requests, a few of each kind."""
    return {
        "harmbench": concepts.load_eval("harmful", "test", rendering="english")[:3],
        "harmless": concepts.load_eval("harmless", "test", rendering="english")[:2],
        "borderline": concepts.load_eval("borderline", "test", rendering="english")[:2],
    }


@pytest.fixture(scope="module")
def reference(tiny, sets, tmp_path_factory):
    """The recipe built once from scratch, uninterrupted (the comparison for the others)."""
    path = tmp_path_factory.mktemp("reference") / "tiny-safety"
    safety_model.build(path, RECIPE, base_model=tiny, sets=sets, log=None)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOJAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def _weights(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_recipe_builds_evaluates_and_is_deterministic(tiny, sets, cache, tmp_path, reference):
    logs = []
    path = safety_model.ensure_safety_model(
        "tiny-safety", recipe=RECIPE, base_model=tiny, sets=sets, log=logs.append
    )
    assert path == str(cache / "tiny-safety") and safety_model.is_built(path)
    assert any("tune step 4/4" in m and "ETA" in m for m in logs)
    n_benign = RECIPE.n_answers + RECIPE.n_longform_answers
    assert any(f"own answers {n_benign}/{n_benign}" in m for m in logs)
    report = safety_model.read_eval(path)
    harmful = [p for p in safety_model.training_prompts(RECIPE) if p.kind == "harmful"]
    assert report["data"]["harmful"] == len(harmful) > 540  # grammar + long-form requests
    assert report["data"]["benign"] + report["data"]["benign_dropped"] == n_benign
    assert report["tune_steps_run"] == 4 and report["cached"] == {
        "answers": False,
        "eval_base": False,
    }
    for figures in (report["base_figures"], report["tuned_figures"]):
        assert figures["harmbench"]["refused"]["n"] == 3 and figures["benign"]["answered"]["n"] == 4
        b = figures["benign"]["answered"]
        assert (
            b["k"] == figures["harmless"]["answered"]["k"] + figures["borderline"]["answered"]["k"]
        )
    for s, c, r in safety_model.TARGETS:
        rate = report["tuned_figures"].get(s, {}).get(c, {}).get("rate", 0.0)
        assert report["met"][s] == (rate >= r)
    assert not report["met"]["harmbench_jailbreak"]  # no such set here: not met, never assumed
    lines = (cache / "tiny-safety" / safety_model.RESPONSES_FILE).read_text().splitlines()
    assert len(lines) == 2 * 7 and {json.loads(x)["model"] for x in lines} == {"base", "tuned"}
    # The published directory loads, and is the tuned model (not the base).
    loaded = emojax.load_model(path)
    tokens = jnp.asarray([[5, 6, 7, 8]])
    diff = (
        emojax.forward(loaded.params, loaded.config, tokens).logits
        - emojax.forward(tiny.params, tiny.config, tokens).logits
    )
    assert float(jnp.abs(diff).max()) > 1e-3
    # Deterministic: another build from scratch elsewhere wrote the same weights and figures.
    assert _same_weights(cache / "tiny-safety", reference)
    assert safety_model.read_eval(reference)["tuned_figures"] == report["tuned_figures"]
    seeded = dataclasses.replace(RECIPE, spec=dataclasses.replace(RECIPE.spec, seed=1))
    third = tmp_path / "seed1" / "tiny-safety"
    safety_model.build(third, seeded, base_model=tiny, sets=sets, log=None)
    assert not _same_weights(reference, third)


def test_more_steps_resume_the_same_run(tiny, sets, tmp_path, reference):
    """Fewer steps, then more: the longer build resumes and equals an uninterrupted one."""
    work, logs = tmp_path / "work", []
    short = dataclasses.replace(RECIPE, spec=dataclasses.replace(RECIPE.spec, steps=2))
    safety_model.build(
        tmp_path / "a" / "m", short, base_model=tiny, sets=sets, workdir=work, log=None
    )
    report = safety_model.build(
        tmp_path / "b" / "m", RECIPE, base_model=tiny, sets=sets, workdir=work, log=logs.append
    )
    assert any("resumed from step 2" in m for m in logs)
    assert report["tune_steps_run"] == 2 and report["cached"] == {
        "answers": True,
        "eval_base": True,
    }
    assert _same_weights(tmp_path / "b" / "m", reference)  # == built in one go
    assert not _same_weights(tmp_path / "a" / "m", tmp_path / "b" / "m")
    # Fewer steps than the work directory holds: a fresh run, not the longer one's weights.
    logs.clear()
    safety_model.build(
        tmp_path / "d" / "m", short, base_model=tiny, sets=sets, workdir=work, log=logs.append
    )
    assert any("starting afresh" in m for m in logs)
    assert _same_weights(tmp_path / "a" / "m", tmp_path / "d" / "m")


def test_interrupted_build_publishes_nothing_then_resumes(tiny, sets, cache, monkeypatch):
    calls = []
    real = safety_model.evaluate

    def failing(model, *a, **k):
        calls.append(model)
        if len(calls) == 2:  # the tuned model's evaluation: tuning has finished
            raise KeyboardInterrupt("interrupted")
        return real(model, *a, **k)

    monkeypatch.setattr(safety_model, "evaluate", failing)
    build = functools.partial(
        safety_model.ensure_safety_model, "tiny-safety", recipe=RECIPE, base_model=tiny, sets=sets
    )
    with pytest.raises(KeyboardInterrupt):
        build(log=None)
    path = cache / "tiny-safety"
    assert not path.exists() and not safety_model.is_built(path)
    assert not list(cache.glob(".tmp-*"))
    # Interrupted while writing the checkpoint: still nothing published, no temporary left.
    monkeypatch.setattr(safety_model, "evaluate", real)
    with monkeypatch.context() as m:
        m.setattr(type(tiny.tokenizer), "save_pretrained", _raise)
        with pytest.raises(OSError, match="disk full"):
            build(log=None)
    assert not path.exists() and not list(cache.glob(".tmp-*"))
    logs = []
    assert build(log=logs.append) == str(path) and safety_model.is_built(path)
    assert any("resumed from step 4" in m for m in logs)  # the work dir's checkpoints
    assert not any("tune step" in m for m in logs)  # nothing was trained again


def _raise(*args, **kwargs):
    raise OSError("disk full")


def test_registered_name_builds_once_and_loads(tiny, sets, cache, monkeypatch):
    builds = []
    real = safety_model.build
    monkeypatch.setattr(safety_model, "build", lambda *a, **k: builds.append(1) or real(*a, **k))
    builder = functools.partial(
        safety_model.ensure_safety_model, recipe=RECIPE, base_model=tiny, sets=sets, log=None
    )
    monkeypatch.setitem(registry.BUILT, "tiny-safety", registry.BuiltModel("tiny-safety", builder))
    assert registry.is_registered("tiny-safety") and not registry.is_registered("tiny-nothing")
    assert registry.model_path("tiny-safety") == cache / "tiny-safety"
    first = emojax.load_model("tiny-safety")
    second = emojax.load_model("tiny-safety")
    assert builds == [1] and first.path == second.path == str(cache / "tiny-safety")
    assert jax.tree.all(jax.tree.map(np.array_equal, first.params, second.params))
    assert concepts.format_chat(second.tokenizer, "Hi.") == concepts.format_chat(
        tiny.tokenizer, "Hi."
    )
    # A changed recipe (the code's RECIPE edited) is rebuilt, not served stale.
    shorter = dataclasses.replace(RECIPE, spec=dataclasses.replace(RECIPE.spec, steps=2))
    assert safety_model.is_built(first.path, RECIPE)
    assert not safety_model.is_built(first.path, shorter)
    safety_model.ensure_safety_model("tiny-safety", recipe=shorter, base_model=tiny, sets=sets,
                                     log=None)  # fmt: skip
    assert builds == [1, 1] and safety_model.is_built(first.path, shorter)
    # The real entry points at this module's builder (not run here: it tunes SmolLM2).
    entry = registry.BUILT[safety_model.NAME]
    module, _, attr = entry.builder.partition(":")
    assert (module, attr) == ("emojax.safety_model", "ensure_safety_model")
    assert registry.model_path(safety_model.NAME) == cache / safety_model.NAME


def test_evaluate_counts_refusals_per_set_and_pools_benign(tiny, sets, monkeypatch):
    tok = tiny.tokenizer
    refusal = tok.encode("I cannot help with that.") + [tok.eos_token_id]
    answer = tok.encode("Sure, here is how.") + [tok.eos_token_id]
    # Canned responses: harmful prompts refused except the first; benign answered except one.
    canned = {p.text: answer if i == 0 else refusal for i, p in enumerate(sets["harmbench"])}
    canned |= {p.text: answer for p in sets["harmless"]}
    canned |= {p.text: refusal if i == 0 else answer for i, p in enumerate(sets["borderline"])}
    monkeypatch.setattr(tune, "own_answers", lambda m, texts, **k: [canned[t] for t in texts])
    figures, records = safety_model.evaluate(tiny, sets, log=None)
    assert figures["harmbench"]["refused"]["k"] == 2 and figures["harmbench"]["refused"]["n"] == 3
    assert figures["harmless"]["answered"]["rate"] == 1.0
    assert figures["borderline"]["answered"]["k"] == 1
    assert figures["benign"]["answered"]["k"] == 3 and figures["benign"]["refused"]["k"] == 1
    assert [r["refused"] for r in records] == [False, True, True, False, False, True, False]
    no_benign, _ = safety_model.evaluate(tiny, {"harmbench": sets["harmbench"]}, log=None)
    assert "benign" not in no_benign


def test_wilson_interval_and_table_mark_unmet_targets():
    lo, hi = safety_model.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = safety_model.wilson_interval(45, 50)
    assert lo < 0.9 < hi and hi < 1.0
    assert safety_model.wilson_interval(0, 0) == (0.0, 1.0)
    rate = lambda k, n: {
        "k": k,
        "n": n,
        "rate": k / n,
        "ci95": list(safety_model.wilson_interval(k, n)),
    }  # noqa: E731
    figures = {"harmbench": {"refused": rate(95, 100)}, "benign": {"answered": rate(80, 100)}}
    report = {
        "base_figures": {},
        "tuned_figures": figures,
        "met": {"harmbench": True, "harmbench_jailbreak": False, "benign": False},
    }
    table = safety_model.format_table(report).splitlines()
    assert "95.0 %" in table[2] and "✗" not in table[2]
    assert "80.0 %" in table[4] and table[4].endswith("✗ |")
    assert "—" in table[3]


def test_refused_own_answers_are_answered_again_from_the_prefill(tiny, sets, tmp_path, monkeypatch):
    """Own answers read as refusals are regenerated from 'Sure'; still refused: left out."""
    sure = tiny.tokenizer.encode("Sure", add_special_tokens=False)
    firsts = []

    def is_refusal(model, answer):  # every plain answer "refuses"; half of the prefilled ones too
        if list(answer[: len(sure)]) != sure:
            return True
        firsts.append(answer)
        return len(firsts) % 2 == 0

    monkeypatch.setattr(safety_model, "_is_refusal", is_refusal)
    work = tmp_path / "work"  # shared: the second build reuses answers and the base's eval
    report = safety_model.build(tmp_path / "m", RECIPE, base_model=tiny, sets=sets,
                                workdir=work, log=None)  # fmt: skip
    n_benign = RECIPE.n_answers + RECIPE.n_longform_answers
    half = n_benign // 2
    assert report["data"]["benign_prefilled"] == half and report["data"]["benign_dropped"] == half
    assert report["data"]["benign"] == half and len(firsts) == n_benign
    no_prefill = dataclasses.replace(RECIPE, prefill="")
    report = safety_model.build(tmp_path / "n", no_prefill, base_model=tiny, sets=sets,
                                workdir=work, log=None)  # fmt: skip
    assert report["data"]["benign_prefilled"] == 0 and report["data"]["benign_dropped"] == n_benign


def test_training_prompts_add_every_longform_harmful_and_the_sampled_harmless():
    with_lf = safety_model.training_prompts(RECIPE)
    without = safety_model.training_prompts(dataclasses.replace(RECIPE, longform=False))
    added = [p for p in with_lf if p.id.startswith("longform-")]
    assert not any(p.id.startswith("longform-") for p in without)
    assert [p for p in with_lf if not p.id.startswith("longform-")] == without
    harmful = [p for p in added if p.kind == "harmful"]
    assert len(harmful) == len(tune.longform_prompts("harmful"))
    assert len([p for p in added if p.kind == "harmless"]) == RECIPE.n_longform_answers
    # harmful ones first (build() relies on it), then the benign ones
    kinds = [p.kind == "harmful" for p in with_lf]
    assert kinds == sorted(kinds, reverse=True)
