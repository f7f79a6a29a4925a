"""Concept / evaluation datasets: determinism, schema, loaders, chat formatting."""

from __future__ import annotations

import json

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
    assert sizes == {"train": 180, "val": 60, "test": 60}
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
    assert cued[0].text == concepts.with_cue(plain[0].text, "concern", 0)
    assert cued == concepts.load_eval("harmful", "test", cue="concern")
    assert concepts.load_eval("harmful", "test", cue="none") == plain
    assert len(concepts.load_eval("harmful", limit=5)) == 5


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
