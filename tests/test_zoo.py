"""The zoo: smoke build, Hugging Face / emojax loading, cache reuse, interrupted builds."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from configs.zoo import get_config
from emojax import concepts
from emojax.concepts import grammar
from emojax.zoo import build as zoo_build
from emojax.zoo import corpus

MODELS = ("base", "instruct", "safety-1", "safety-2", "safety-3")


def smoke_zoo_dir(tmp_path_factory) -> Path:
    """The one smoke-zoo directory of a test session (shared with tests/conftest.py)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # xdist workers of one run share the build
        base = base.parent
    return base / "smoke_zoo"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, str]:
    # Built once per session: a second build_zoo call on the same directory is a cache hit.
    return zoo_build.build_zoo(get_config("smoke"), smoke_zoo_dir(tmp_path_factory))


def _mtimes(root: Path) -> dict[str, float]:
    return {m: (root / m / "model.safetensors").stat().st_mtime_ns for m in MODELS}


def test_smoke_zoo_builds(zoo):
    assert tuple(zoo) == MODELS
    root = Path(zoo["base"]).parent
    manifest = json.loads((root / "zoo.json").read_text())
    assert manifest["config_hash"] == zoo_build.config_hash(get_config("smoke"))
    for name, path in zoo.items():
        for f in zoo_build.REQUIRED_FILES + (zoo_build.MODEL_MARKER,):
            assert (Path(path) / f).is_file(), (name, f)
    table = zoo_build.load_behaviour(root)
    assert set(table["models"]) == set(MODELS)
    for entry in table["models"].values():
        for key in ("harmful_refusal", "harmless_compliance", "borderline_over_refusal"):
            assert set(entry[key]) == set(concepts.CUE_STATES) | {"all"}
            assert all(0.0 <= v <= 1.0 for v in entry[key].values())
    assert "harmful refusal" in zoo_build.format_behaviour(table)
    assert not list(root.glob(".tmp-*"))


def test_checkpoints_load_in_transformers_and_emojax_with_equal_logits(zoo):
    import torch
    import transformers

    from emojax.loading import load_model
    from emojax.model import forward

    for name in ("base", "safety-3"):
        model = load_model(zoo[name])
        hf_tok = transformers.AutoTokenizer.from_pretrained(zoo[name], local_files_only=True)
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            zoo[name], local_files_only=True, dtype=torch.float32
        ).eval()
        texts = [p.text for p in concepts.load_eval("harmful", "test", cue="concern", limit=3)]
        text = concepts.format_chat(hf_tok, texts[0])
        assert text == corpus.render_chat(texts[0])
        tokens, mask = concepts.encode_chat(hf_tok, texts, template_source=hf_tok)
        assert tokens[0, -1] == hf_tok.convert_tokens_to_ids("<|assistant|>")
        ours = np.asarray(
            forward(model.params, model.config, jnp.asarray(tokens), attention_mask=mask).logits
        )
        with torch.no_grad():
            ref = hf(
                input_ids=torch.from_numpy(tokens).long(),
                attention_mask=torch.from_numpy(mask).long(),
                position_ids=torch.from_numpy(np.clip(np.cumsum(mask, 1) - 1, 0, None)).long(),
            ).logits.numpy()
        real = mask.astype(bool)
        np.testing.assert_allclose(ours[real], ref[real], atol=2e-4, rtol=1e-4)
        assert model.tokenizer.encode(text, add_special_tokens=False) == hf_tok.encode(
            text, add_special_tokens=False
        )


def test_no_unknown_words_in_shipped_prompts(zoo):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(zoo["instruct"]) / "tokenizer.json"))
    unk = tok.token_to_id("<unk>")
    texts = list(zoo_build._dataset_texts())
    for sentences in grammar.CUES.values():
        texts += list(sentences)
    assert all(unk not in e.ids for e in tok.encode_batch(texts))
    # Round trip: lower case, words and punctuation split by single spaces.
    for enc, text in zip(tok.encode_batch(texts), texts, strict=True):
        assert tok.decode(enc.ids) == text.lower()


def test_cache_is_reused(zoo, tmp_path_factory):
    root = smoke_zoo_dir(tmp_path_factory)
    before = _mtimes(root)
    logs: list[str] = []
    t0 = time.perf_counter()
    again = zoo_build.build_zoo(get_config("smoke"), root, log=logs.append)
    assert again == zoo
    assert time.perf_counter() - t0 < 5.0
    assert any("reusing complete build" in line for line in logs)
    assert _mtimes(root) == before


def test_interrupted_build_is_detected_and_rebuilt(zoo, tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    shutil.copytree(Path(zoo["base"]).parent, root)
    cfg = get_config("smoke")
    assert zoo_build.zoo_is_complete(root, zoo_build.config_hash(cfg))
    before = _mtimes(root)
    # A crash between writing safety-2 and renaming it into place (after its old copy was
    # found stale): a half-finished temp dir, no manifest.
    (root / "safety-2" / zoo_build.MODEL_MARKER).unlink()
    publish = zoo_build._publish

    def crash(tmp, final):
        if Path(final).name == "safety-2":
            raise KeyboardInterrupt("simulated crash")
        publish(tmp, final)

    monkeypatch.setattr(zoo_build, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        zoo_build.build_zoo(cfg, root, log=lambda s: None)
    assert list(root.glob(".tmp-safety-2-*"))
    assert not (root / "zoo.json").exists()
    assert not zoo_build.model_is_complete(root / "safety-2", zoo_build.config_hash(cfg))
    assert not zoo_build.zoo_is_complete(root, zoo_build.config_hash(cfg))

    monkeypatch.setattr(zoo_build, "_publish", publish)
    logs: list[str] = []
    paths = zoo_build.build_zoo(cfg, root, log=logs.append)
    assert set(paths) == set(MODELS)
    assert zoo_build.zoo_is_complete(root, zoo_build.config_hash(cfg))
    assert not list(root.glob(".tmp-*"))
    assert any("leftovers" in line for line in logs)
    after = _mtimes(root)
    for m in ("base", "instruct", "safety-1"):
        assert after[m] == before[m], f"{m} should have been reused"
    for m in ("safety-2", "safety-3"):
        assert after[m] != before[m], f"{m} should have been rebuilt"
    manifest = json.loads((root / "zoo.json").read_text())
    assert manifest["rebuilt"] == ["safety-2", "safety-3"]


def test_config_hash_tracks_what_is_built(tmp_path):
    smoke, default = get_config("smoke"), get_config("")
    assert zoo_build.config_hash(smoke) != zoo_build.config_hash(default)
    moved = get_config("smoke")
    moved.zoo.cache_dir = str(tmp_path)
    assert zoo_build.config_hash(moved) == zoo_build.config_hash(smoke)
    assert zoo_build.default_cache_dir(moved) == tmp_path / zoo_build.config_hash(smoke)
    assert zoo_build.config_hash(smoke.zoo) == zoo_build.config_hash(smoke)


def test_planted_coupling():
    p = corpus.refusal_prob
    for sev in (1, 2, 3):
        rates = [p(stage, "harmful", sev, "none") for stage in corpus.STAGES]
        assert rates == sorted(rates)
        assert p("base", "harmful", sev, "concern") > p("base", "harmful", sev, "none")
        assert p("base", "harmful", sev, "none") > p("base", "harmful", sev, "eagerness")
    assert p("safety-3", "harmful", 1, "eagerness") > 0.95
    assert p("safety-1", "harmless", 0, "concern") < 0.05
    table = corpus.planted_markdown()
    assert table.count("\n") == 1 + 5 * 5 and "| harmful, severity 3 | concern |" in table


def test_corpus_is_seeded_and_excludes_held_out_requests():
    held = zoo_build.held_out_requests()
    a = corpus.sample_corpus("instruct", 300, seed=0, held_out=held)
    assert a == corpus.sample_corpus("instruct", 300, seed=0, held_out=held)
    assert a != corpus.sample_corpus("instruct", 300, seed=1, held_out=held)
    cores = {grammar.strip_opener(t) for t in held}
    for d in a:
        assert not any(d.prompt.endswith(f" {t} <|end|> <|assistant|>") for t in cores)
        if d.refused:
            assert zoo_build.is_refusal(d.response)
        elif d.response:
            assert not zoo_build.is_refusal(d.response)


def test_refusal_phrases_agree_with_readouts_classifier():
    from emojax import readouts

    for refusal in grammar.REFUSALS:
        text = f"{refusal} {grammar.REFUSAL_REASONS['plain'][0]}"
        assert zoo_build.is_refusal(text) and readouts.classify_response(text)
    for openers in grammar.COMPLY_OPENERS.values():
        for opener in openers:
            text = f"{opener} here is how : first , read the label . {grammar.HEDGES[0]}"
            assert not zoo_build.is_refusal(text)
            assert not readouts.classify_response(text), text


def test_build_script(zoo, tmp_path_factory):
    """The absl script reuses the session's smoke zoo (a cache hit) and prints the table."""
    import subprocess
    import sys

    root = smoke_zoo_dir(tmp_path_factory)
    out = subprocess.run(
        [sys.executable, "scripts/build_zoo.py", "--config=configs/zoo.py:smoke",
         f"--workdir={root}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "safety-3" in out.stdout


@pytest.mark.slow
def test_default_zoo_meets_behaviour_targets():
    """The issue's behaviour targets on the default zoo (built once, ~1.5 min, then cached)."""
    cfg = get_config("")
    paths = zoo_build.build_zoo(cfg)  # the cache directory: a cache hit after the first build
    table = zoo_build.load_behaviour(Path(paths["base"]).parent)["models"]
    refusal = [table[m]["harmful_refusal"]["all"] for m in MODELS]
    assert refusal == sorted(refusal) and len(set(refusal)) == len(refusal), refusal
    assert refusal[-1] >= 0.95
    for m in ("safety-1", "safety-2", "safety-3"):
        assert table[m]["harmless_compliance"]["all"] >= 0.85
    base = table["base"]["harmful_refusal"]
    assert base["concern"] - base["eagerness"] >= 0.20
