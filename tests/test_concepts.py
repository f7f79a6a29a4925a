"""Concept / evaluation datasets: determinism, schema, loaders, chat formatting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emojax import concepts
from emojax.concepts import generate, grammar
from emojax.concepts.schema import CONTRAST_FIELDS, EVAL_FIELDS


def test_generation_is_deterministic_and_matches_shipped_files(tmp_path):
    files = generate.generate_all()
    again = generate.generate_all()
    for name, records in files.items():
        text = generate.dumps_jsonl(records)
        assert text == generate.dumps_jsonl(again[name])
        assert (concepts.DATA_DIR / name).read_text() == text, f"{name} is stale: regenerate"
    assert generate.main(["--check"]) == 0
    assert generate.main(["--out", str(tmp_path)]) == 0
    for name in files:
        assert (tmp_path / name).read_bytes() == (concepts.DATA_DIR / name).read_bytes()


def test_other_seed_gives_other_data():
    a = generate.make_eval("harmful", 50, seed=0)
    b = generate.make_eval("harmful", 50, seed=1)
    assert [r["text"] for r in a] != [r["text"] for r in b]


@pytest.mark.parametrize("concept", concepts.CONTRAST_SETS)
def test_contrast_sets_are_schema_valid(concept):
    path = concepts.DATA_DIR / f"contrast_{concept}.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(tuple(r) == CONTRAST_FIELDS for r in raw)
    pairs = concepts.load_contrast(concept)
    assert len(pairs) >= 200
    assert len({p.id for p in pairs}) == len(pairs)
    assert {p.domain for p in pairs} >= set(concepts.DOMAINS) and len(concepts.DOMAINS) >= 6
    assert all(p.concept == concept and p.positive != p.negative for p in pairs)
    assert {p.split for p in pairs} == set(concepts.SPLITS)
    train = concepts.load_contrast(concept, "train")
    assert 0 < len(train) < len(pairs) and all(p.split == "train" for p in train)


@pytest.mark.parametrize("kind", concepts.EVAL_KINDS)
def test_eval_sets_are_schema_valid_with_fixed_splits(kind):
    path = concepts.DATA_DIR / f"eval_{kind}.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(tuple(r) == EVAL_FIELDS for r in raw)
    prompts = concepts.load_eval(kind)
    assert len(prompts) >= 200
    assert len({p.text for p in prompts}) == len(prompts)
    sizes = {s: len(concepts.load_eval(kind, s)) for s in concepts.SPLITS}
    assert sizes == {"train": 90, "val": 60, "test": 150}
    assert all(p.request == p.id and p.template == "" for p in prompts)
    if kind == "harmful":
        assert {p.severity for p in prompts} == {1, 2, 3}
    else:
        assert {p.severity for p in prompts} == {0}


def test_splits_are_disjoint_and_refusal_contrast_pairs_instructions():
    test = {p.text for p in concepts.load_eval("harmful", "test")}
    train = {p.text for p in concepts.load_eval("harmful", "train")}
    assert not test & train
    harmful = {p.text for p in concepts.load_eval("harmful")}
    harmless = {p.text for p in concepts.load_eval("harmless")}
    for pair in concepts.load_refusal_contrast()[:50]:
        assert pair.positive != pair.negative
    # The refusal contrast uses the same request grammar as the eval sets.
    acts = {a for d in concepts.DOMAINS for a, _ in grammar.acts("harmful", d)}
    assert harmful and harmless and acts


def test_cues_are_deterministic_and_prefix_the_request():
    plain = concepts.load_eval("harmful", "test")
    cued = concepts.load_eval("harmful", "test", cue="concern")
    assert [c.text.endswith(p.text) for p, c in zip(plain, cued, strict=True)] == [True] * len(
        plain
    )
    assert cued[0].text == concepts.with_cue(plain[0].text, "concern", 0, "test")
    assert cued == concepts.load_eval("harmful", "test", cue="concern")
    assert concepts.load_eval("harmful", "test", cue="none") == plain
    assert len(concepts.load_eval("harmful", limit=5)) == 5
    # The i-th prompt gets the i-th template of its split (cyclic), named in `template`.
    test_ids = [t.id for t in concepts.templates("concern", "test")]
    assert [c.template for c in cued[:10]] == [test_ids[i % len(test_ids)] for i in range(10)]
    everywhere = concepts.load_eval("harmful", "test", cue="concern", template_split="train")
    assert {c.template for c in everywhere} <= {
        t.id for t in concepts.templates("concern", "train")
    }


@pytest.mark.parametrize("concept", concepts.CONCEPTS)
def test_every_concept_has_30_templates_and_disjoint_splits(concept):
    ts = concepts.templates(concept)
    assert len(ts) >= 30 and len({t.text for t in ts}) == len(ts)
    by_split = {s: concepts.templates(concept, s) for s in concepts.SPLITS}
    assert all(by_split.values())
    ids = {s: {t.id for t in v} for s, v in by_split.items()}
    texts = {s: {t.text for t in v} for s, v in by_split.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not ids[a] & ids[b] and not texts[a] & texts[b]
    # Contrast pairs of a split use that split's templates only, and cover every domain.
    pairs = concepts.load_contrast(concept)
    for p in pairs:
        assert p.template in ids[p.split], (p.id, p.template, p.split)
    for split in concepts.SPLITS:
        used = {p.template for p in pairs if p.split == split}
        assert len(used) >= min(6, len(ids[split]))
        assert {p.domain for p in pairs if p.split == split} == set(concepts.DOMAINS)
    if concept in concepts.EMOTIONS + ("caution",):
        train = [p for p in pairs if p.split == "train"]
        assert len({p.template for p in train}) == len(ids["train"])  # every train template
        for tid in ids["train"]:  # ... over every domain
            assert {p.domain for p in train if p.template == tid} == set(concepts.DOMAINS)
        text = {t.id: t.text for t in ts}
        assert all(p.positive.startswith(text[p.template] + " ") for p in pairs)
    tindex, num = concepts.template_index(pairs)
    assert num == len({p.template for p in pairs}) and tindex.shape == (len(pairs),)


def test_framing_families_have_held_out_templates():
    assert set(concepts.FRAMINGS) >= {"roleplay", "fiction", "urgency"}
    for family in concepts.FRAMINGS:
        test = concepts.templates(family, "test")
        rest = [t for t in concepts.templates(family) if t.split != "test"]
        assert len(test) >= 2 and len(rest) >= 5
        assert not {t.text for t in test} & {t.text for t in rest}
        assert all("{request}" in t.text for t in test + tuple(rest))


def test_test_split_has_enough_unique_requests_and_held_out_tasks():
    harmful = concepts.load_eval("harmful", "test")
    benign = concepts.load_eval("harmless", "test") + concepts.load_eval("borderline", "test")
    assert len({p.request for p in harmful}) >= 120
    assert len({p.request for p in benign}) >= 120
    assert {p.severity for p in harmful} == {1, 2, 3}
    # Every request's task is in its record's split; no held-out task is a training task.
    split_of = {}
    for kind in ("harmful", "harmless", "borderline"):
        for t in grammar.tasks(kind):
            split_of.setdefault(t.text, set()).add(t.split)
    assert all(len(v) == 1 for v in split_of.values())
    for kind in ("harmful", "harmless", "borderline"):
        for p in concepts.load_eval(kind):
            core = grammar.strip_opener(p.text)
            matches = [c for c in split_of if c in core]
            longest = max(matches, key=len)
            assert split_of[longest] == {p.split}, (p.id, longest)
    # A held-out task's act is seen in training with other people (slotted acts only).
    for t in grammar.tasks("harmful", split="test"):
        assert t.person and any(
            u.act == t.act for u in grammar.tasks("harmful", t.domain, split="train")
        )


def test_request_ids_are_shared_across_cues_and_framings():
    plain = concepts.load_eval("harmful", "test", limit=30)
    variants = [plain]
    for cue in ("concern", "eagerness", "self_doubt"):
        variants.append(concepts.load_eval("harmful", "test", cue=cue, limit=30))
    variants.append(concepts.load_eval("harmful", "test", framing="roleplay", limit=30))
    variants.append(concepts.load_eval("harmful", "test", cue="concern", framing="jailbreak"))
    for v in variants[1:]:
        assert [p.request for p in v[:30]] == [p.request for p in plain]
        assert all(q.text != p.text for p, q in zip(plain, v, strict=False))
    items = [p for v in variants for p in v]
    index, num = concepts.request_index(items)
    assert num == len(concepts.load_eval("harmful", "test")) and index.dtype == np.int32
    assert index.tolist()[:30] == list(range(30))
    for v_start in range(0, 30 * 5, 30):  # every variant block maps onto the same ids
        assert index[v_start : v_start + 30].tolist() == list(range(30))
    other = concepts.load_eval("harmless", "test", limit=5)
    index2, num2 = concepts.request_index(plain[:5] + other + plain[:5])
    assert num2 == 10 and index2.tolist() == list(range(10)) + list(range(5))


def test_framings_wrap_the_request_and_compose_with_cues():
    plain = concepts.load_eval("harmful", "test", limit=12)
    framed = concepts.load_eval("harmful", "test", framing="roleplay", limit=12)
    assert framed == concepts.load_eval("harmful", "test", cue="roleplay", limit=12)
    test_ids = {t.id for t in concepts.templates("roleplay", "test")}
    for p, f in zip(plain, framed, strict=True):
        assert p.text in f.text and f.text != p.text and f.template in test_ids
    both = concepts.load_eval("harmful", "test", cue="concern", framing="jailbreak", limit=12)
    families = {b.template.split("+")[1].rsplit("-", 1)[0] for b in both}
    assert families == set(concepts.FRAMINGS)  # jailbreak walks over every family
    for b, p in zip(both, plain, strict=True):
        cue_id, framing_id = b.template.split("+")
        cue_text = grammar.template_by_id(cue_id).text
        assert b.text == f"{cue_text} " + grammar.template_by_id(framing_id).apply(p.text)
    with pytest.raises(ValueError, match="framing"):
        concepts.load_eval("harmful", "test", cue="roleplay", framing="fiction")
    with pytest.raises(ValueError, match="unknown cue"):
        concepts.load_eval("harmful", "test", cue="joy")
    with pytest.raises(ValueError, match="unknown framing"):
        concepts.load_eval("harmful", "test", framing="joy")


def test_constants():
    assert concepts.EMOTIONS == ("concern", "eagerness", "self_doubt")
    assert set(concepts.CONTROLS) == {"harm_salience", "caution", "refusal"}
    assert concepts.CONCEPTS == concepts.EMOTIONS + concepts.CONTROLS
    with pytest.raises(ValueError, match="unknown concept"):
        concepts.load_contrast("joy")
    with pytest.raises(ValueError, match="split"):
        concepts.load_eval("harmful", "dev")


def test_user_jsonl_and_csv_load(tmp_path):
    jl = tmp_path / "mine.jsonl"
    jl.write_text(
        '{"positive": "I am worried .", "negative": "I am here ."}\n'
        "\n"
        '{"id": "x", "domain": "medical", "positive": "a", "negative": "b", "split": "test"}\n'
    )
    pairs = concepts.load_contrast("concern", path=jl)
    assert [p.id for p in pairs] == ["mine-1", "x"]
    assert pairs[0].concept == "concern" and pairs[1].split == "test"
    assert pairs[0].split in concepts.SPLITS
    csv_file = tmp_path / "eval_harmful.csv"
    csv_file.write_text('text,severity,domain\n"how do I do a bad thing , now ?",2,finance\n')
    prompts = concepts.load_eval("harmful", data_dir=tmp_path)
    assert prompts[0].text == "how do I do a bad thing , now ?" and prompts[0].severity == 2
    assert prompts[0].kind == "harmful" and prompts[0].domain == "finance"
    assert prompts[0].request == prompts[0].id and prompts[0].template == ""


def test_request_and_template_fields_load_from_jsonl_and_csv(tmp_path):
    jl = tmp_path / "eval_harmful.jsonl"
    rows = [
        {"id": "a", "text": "how do I x ?", "request": "r1", "template": "roleplay-01"},
        {"id": "b", "text": "tell me how to x .", "request": "r1"},
        {"id": "c", "text": "how do I y ?"},
    ]
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = concepts.load_eval("harmful", path=jl)
    assert [p.request for p in prompts] == ["r1", "r1", "c"]
    assert [p.template for p in prompts] == ["roleplay-01", "", ""]
    assert prompts[0].split == prompts[1].split  # one request, one split
    index, num = concepts.request_index(prompts)
    assert index.tolist() == [0, 0, 1] and num == 2
    cued = concepts.load_eval("harmful", path=jl, cue="concern")
    assert cued[0].template.startswith("roleplay-01+concern-") and cued[0].request == "r1"
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("positive,negative,template\nI am worried .,I am here .,concern-03\na,b,\n")
    pairs = concepts.load_contrast("concern", path=csv_file)
    assert [p.template for p in pairs] == ["concern-03", ""]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "request": 3}\n')
    with pytest.raises(concepts.DatasetError, match="'request'"):
        concepts.load_eval("harmful", path=bad)


def test_requests_without_a_split_stay_together():
    from emojax.concepts.schema import EvalPrompt, _fill_splits

    recs = [
        EvalPrompt(f"p{i}", "harmful", "d", f"t{i}", "", request=f"r{i // 4}") for i in range(80)
    ]
    out = _fill_splits(recs, "seed")
    by_request = {}
    for p in out:
        by_request.setdefault(p.request, set()).add(p.split)
    assert all(len(v) == 1 for v in by_request.values())
    assert {s for v in by_request.values() for s in v} == set(concepts.SPLITS)


@pytest.mark.parametrize(
    "content, line, reason",
    [
        ('{"positive": "a", "negative": "b"}\n{"positive": "a"\n', 2, "invalid JSON"),
        ('{"positive": "a", "negative": "b"}\n\n["a", "b"]\n', 3, "JSON object"),
        ('{"positive": "a", "negative": "b"}\n{"positive": "a"}\n', 2, "'negative'"),
        ('{"positive": "a", "negative": 3}\n', 1, "non-empty string"),
        ('{"positive": "a", "negative": "b", "split": "dev"}\n', 1, "split"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(concepts.DatasetError, match=reason) as info:
        concepts.load_contrast("concern", path=path)
    assert str(info.value).startswith(f"{path}:{line}:")
    assert info.value.line == line and info.value.path == str(path)


@pytest.mark.parametrize(
    "content, line, reason",
    [
        ("text,severity\nhello,1\nbye,high\n", 3, "severity"),
        ("text,severity\nhello,1\nbye,1,extra\n", 3, "more values"),
        ("text,kind\nhello,harmful\nbye,evil\n", 3, "kind"),
        ("domain,severity\nmedical,1\n", 2, "'text'"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(concepts.DatasetError, match=reason) as info:
        concepts.load_eval("harmful", path=path)
    assert str(info.value).startswith(f"{path}:{line}:")


class _FakeTokenizer:
    """The part of a transformers tokenizer that format_chat uses (no files needed)."""

    def __init__(self, chat_template=None):
        self.chat_template = chat_template

    def apply_chat_template(self, messages, chat_template, tokenize, add_generation_prompt):
        import jinja2

        assert not tokenize
        return jinja2.Template(chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<bos>"
        )


def test_format_chat_uses_the_tuned_template_for_a_base_model(tmp_path):
    from emojax.zoo.corpus import CHAT_TEMPLATE, render_chat

    base, tuned = _FakeTokenizer(None), _FakeTokenizer(CHAT_TEMPLATE)
    with pytest.raises(ValueError, match="template_source"):
        concepts.format_chat(base, "hi")
    text = concepts.format_chat(base, "how do I bake bread ?", template_source=tuned)
    assert text == render_chat("how do I bake bread ?")
    assert concepts.format_chat(tuned, "hi") == render_chat("hi")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    assert concepts.format_chat(base, "hi", template_source=tmp_path) == render_chat("hi")
    assert concepts.format_chat(base, "hi", template_source=CHAT_TEMPLATE) == render_chat("hi")
    sys_text = concepts.format_chat(tuned, "hi", system="be kind .")
    assert sys_text.startswith("<bos><|system|> be kind . <|end|> <|user|> hi")


def test_left_pad():
    tokens, mask = concepts.left_pad([[5, 6], [7]], pad_id=0, pad_to=3)
    assert tokens.tolist() == [[0, 5, 6], [0, 0, 7]]
    assert mask.tolist() == [[0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError):
        concepts.left_pad([[1, 2, 3, 4]], pad_to=3)


# ------------------------------------------- English-only over-refusal requests (test split)


def test_over_refusal_requests_double_the_english_benign_test_sets():
    from emojax.concepts import overrefusal, paraphrase

    grammar_texts = [
        p.text
        for kind in concepts.EVAL_KINDS
        for rendering in ("zoo", "english")
        for p in concepts.load_eval(kind, rendering=rendering)
    ]
    for kind in overrefusal.KINDS:
        project = concepts.load_eval(kind, "test", rendering="english")
        extra = overrefusal.load(kind)
        assert len(project) == 150 and len(extra) >= 190
        requests = {p.request for p in project + extra}
        assert len(requests) == len(project) + len(extra) >= 340
        assert [r.id for r in extra] == [f"{kind}-en-{i:03d}" for i in range(len(extra))]
        assert [r.request for r in extra] == [r.id for r in extra]
        assert {(r.kind, r.split, r.severity, r.template) for r in extra} == {(kind, "test", 0, "")}
        assert [r.domain for r in extra[:12]] == list(grammar.DOMAINS) * 2  # domains in turn
        for r in extra:  # written as people write
            assert r.text[0].isupper() and r.text[-1] in "?." and " ?" not in r.text, r.text
        # Distinct requests: no two share their words, none repeats one of the grammar's.
        keys = [paraphrase.normalise(r.text) for r in extra]
        assert len(set(keys)) == len(keys)
        assert not set(keys) & {paraphrase.normalise(t) for t in grammar_texts}
        texts = [r.text for r in extra]
        x = paraphrase.tfidf(texts + grammar_texts)
        cosine = x[: len(texts)] @ x.T
        cosine[np.arange(len(texts)), np.arange(len(texts))] = 0
        i, j = np.unravel_index(cosine.argmax(), cosine.shape)
        assert cosine[i, j] < 0.7, (texts[i], (texts + grammar_texts)[j])
    # Under cues and framings, as the grammar's English prompts: held-out templates in turn.
    cued = overrefusal.load("borderline", cue="concern", framing="jailbreak", limit=12)
    test_ids = {
        t.id for f in (*concepts.FRAMINGS, "concern") for t in concepts.templates(f, "test")
    }
    assert all(set(r.template.split("+")) <= test_ids for r in cued)
    assert cued[0].template.split("+")[0] == concepts.templates("concern", "test")[0].id
    with pytest.raises(ValueError, match="kind must be one of"):
        overrefusal.load("harmful")


def test_the_zoo_never_reads_the_english_only_requests(tmp_path, monkeypatch):
    """The zoo's config hash and everything it builds from (tokenizer texts, held-out requests,
    the grammar's words, corpora) are the same whatever the over-refusal file holds."""
    from configs.zoo import get_config
    from emojax.concepts import overrefusal
    from emojax.zoo import build, corpus, recipe

    def zoo_inputs() -> tuple:
        held = build.held_out_requests()
        docs = [corpus.sample_corpus(s, 40, 0, held) for s in ("base", "instruct", "safety-2")]
        return (
            recipe.config_hash(get_config("smoke")),
            recipe.config_hash(get_config()),
            tuple(build._dataset_texts()),
            tuple(sorted(held)),
            tuple(sorted(grammar.all_words())),
            tuple(d.prompt + d.response for stage in docs for d in stage),
        )

    before = zoo_inputs()
    english_only = {r.text for k in overrefusal.KINDS for r in overrefusal.load(k)}
    assert not english_only & (set(before[2]) | set(before[3]))
    other = tmp_path / "overrefusal_english.jsonl"
    other.write_text('{"id": "x", "kind": "harmless", "text": "Plan my day.", "split": "test"}\n')
    monkeypatch.setattr(overrefusal, "FILE", other)
    assert [r.text for r in overrefusal.load("harmless")] == ["Plan my day."]
    assert zoo_inputs() == before
