"""Checkpoint loading: good checkpoints load, bad ones fail with an error that names the problem.

Covers single-file and sharded safetensors, a model id in a fake local Hugging Face cache,
tokenizer files, transformers-4-style configs, `save_pretrained` round trips (transformers
reads what emojax writes) and every way a checkpoint can be broken: a missing, unexpected or
misshapen tensor, an unknown `model_type`, no `config.json`, no weights, a missing shard.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from conftest import FAMILIES, build_hf_model, hf_run, jit_forward, random_tokens
from safetensors.numpy import load_file, save_file

import emojax


def _copy(checkpoint_dir: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    shutil.copytree(checkpoint_dir, dest)
    return dest


def _edit_tensors(path: pathlib.Path, edit) -> None:
    file = path / "model.safetensors"
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def _edit_config(path: pathlib.Path, edit) -> None:
    file = path / "config.json"
    d = json.loads(file.read_text())
    edit(d)
    file.write_text(json.dumps(d))


def _assert_same_params(a, b) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def llama(checkpoints):
    return checkpoints("llama")


# ---------------------------------------------------------------------------------------------
# bad checkpoints


def test_missing_tensor_is_named(llama, tmp_path):
    path = _copy(llama.path, tmp_path / "ckpt")
    _edit_tensors(path, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(emojax.CheckpointError, match=r"missing.*model\.layers\.1\.mlp\.down_proj"):
        emojax.load_model(path)


def test_unexpected_tensor_is_named(llama, tmp_path):
    path = _copy(llama.path, tmp_path / "ckpt")
    extra = "model.layers.0.self_attn.extra_proj.weight"
    _edit_tensors(path, lambda t: t.update({extra: np.zeros((4, 4), np.float32)}))
    with pytest.raises(emojax.CheckpointError, match=r"unexpected.*extra_proj"):
        emojax.load_model(path)


def test_tensor_of_a_layer_beyond_the_config_is_unexpected(llama, tmp_path):
    path = _copy(llama.path, tmp_path / "ckpt")
    name = "model.layers.3.input_layernorm.weight"  # the config has 3 layers: 0, 1, 2
    _edit_tensors(path, lambda t: t.update({name: np.ones(64, np.float32)}))
    with pytest.raises(emojax.CheckpointError, match=r"model\.layers\.3\.input_layernorm"):
        emojax.load_model(path)


def test_wrong_shape_is_named(llama, tmp_path):
    path = _copy(llama.path, tmp_path / "ckpt")
    name = "model.layers.2.self_attn.k_proj.weight"
    _edit_tensors(path, lambda t: t.update({name: np.zeros((48, 64), np.float32)}))
    with pytest.raises(emojax.CheckpointError, match=r"k_proj.*shape.*\(48, 64\)"):
        emojax.load_model(path)


def test_unknown_model_type_is_named(llama, tmp_path):
    path = _copy(llama.path, tmp_path / "ckpt")
    _edit_config(path, lambda d: d.update(model_type="mamba"))
    with pytest.raises(emojax.ConfigError, match="mamba"):
        emojax.load_model(path)


def test_missing_config_json(llama, tmp_path):
    path = _copy(llama.path, tmp_path / "ckpt")
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        emojax.load_model(path)


def test_missing_weights_file(llama, tmp_path):
    path = _copy(llama.path, tmp_path / "ckpt")
    (path / "model.safetensors").unlink()
    with pytest.raises(emojax.CheckpointError, match="model.safetensors"):
        emojax.load_model(path)


def test_nonexistent_path_or_uncached_model_id(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-model"):
        emojax.load_model("no-such-org/no-such-model")


def test_unknown_model_name_lists_the_registered_names_and_the_local_forms(tmp_path, monkeypatch):
    import huggingface_hub

    from emojax import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(models.BUILT, "zz-test-built", models.BuiltModel("zz-test-built", "x:y"))
    names = models.registered_names()
    assert "smollm2-135m-instruct" in names and names[-1] == "zz-test-built"
    with pytest.raises(FileNotFoundError) as err:
        emojax.load_model("nonexistent")
    message = str(err.value)
    assert message.startswith("'nonexistent' is neither a local checkpoint directory")
    assert f"({', '.join(names)})" in message  # every registered name, fetched and built
    assert "config.json and *.safetensors" in message and ".gguf file" in message
    assert "\n" not in message  # one line: scripts print it as `error: ...`


# ---------------------------------------------------------------------------------------------
# good checkpoints in other layouts


def test_sharded_checkpoint_loads_like_a_single_file(llama, tmp_path):
    path = tmp_path / "sharded"
    llama.hf.save_pretrained(str(path), max_shard_size="40KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (path / "model.safetensors").exists()

    _assert_same_params(emojax.load_model(path).params, llama.params)

    # A shard the index lists but that is gone is named.
    shard = sorted(set(index["weight_map"].values()))[-1]
    (path / shard).unlink()
    with pytest.raises(Exception, match=shard.replace(".", r"\.")):
        emojax.load_model(path)


def test_model_id_from_local_hf_cache(llama, tmp_path, monkeypatch):
    import huggingface_hub

    hub = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--emojax-test--tiny-llama"
    shutil.copytree(llama.path, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))

    model = emojax.load_model("emojax-test/tiny-llama")

    assert model.config == llama.config
    _assert_same_params(model.params, llama.params)


def test_tokenizer_and_chat_template_are_loaded(llama, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = _copy(llama.path, tmp_path / "ckpt")
    assert emojax.load_model(path).tokenizer is None  # no tokenizer files: no tokenizer
    vocab = {f"w{i}": i for i in range(llama.config.vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="w1", eos_token="w2", pad_token="w0", unk_token="w3"
    )
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }} {% endfor %}"
    tok.save_pretrained(str(path))

    loaded = emojax.load_model(path).tokenizer

    assert loaded("w5 w7")["input_ids"] == [5, 7]
    chat = [{"role": "user", "content": "w9"}]
    assert loaded.apply_chat_template(chat, tokenize=False) == "<user>w9 "


def test_transformers4_style_config_gives_the_same_model_config(checkpoints, tmp_path):
    ck = checkpoints("llama3")
    path = _copy(ck.path, tmp_path / "ckpt")

    def to_v4(d):
        rope = dict(d.pop("rope_parameters"))
        d["rope_theta"] = rope.pop("rope_theta")
        d["rope_scaling"] = rope

    _edit_config(path, to_v4)
    assert emojax.ModelConfig.from_pretrained(path) == ck.config


@pytest.mark.parametrize(
    "hf_config, overrides",
    [
        (
            transformers.Qwen2Config(
                num_hidden_layers=3, use_sliding_window=True, sliding_window=4, max_window_layers=1
            ),
            {},
        ),
        # Qwen3 checkpoints may state a window they do not use (use_sliding_window false).
        (transformers.Qwen3Config(num_hidden_layers=3), {"sliding_window": 4096}),
        (transformers.Gemma2Config(num_hidden_layers=3, sliding_window=4), {}),
    ],
    ids=["qwen2", "qwen3", "gemma2"],
)
def test_sliding_layers_without_layer_types(hf_config, overrides):
    """transformers-4 configs have no `layer_types`; the sliding layers must still match."""
    expected = tuple(t == "sliding_attention" for t in hf_config.layer_types)
    d = {**hf_config.to_dict(), **overrides}
    d.pop("layer_types")
    assert emojax.ModelConfig.from_hf_dict(d).sliding_layers == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_config_round_trips_through_hf_dict(checkpoints, family):
    cfg = checkpoints(family).config
    assert emojax.ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    assert cfg.num_params == sum(x.size for x in jax.tree.leaves(checkpoints(family).params))


# ---------------------------------------------------------------------------------------------
# save_pretrained: transformers reads what emojax writes


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2", "gpt2"])
def test_save_pretrained_round_trip(checkpoints, family, tmp_path):
    ck = checkpoints(family)
    emojax.save_pretrained(ck.params, ck.config, str(tmp_path / "out"))

    reloaded = emojax.load_model(tmp_path / "out")
    _assert_same_params(reloaded.params, ck.params)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "out"), attn_implementation="eager", dtype=torch.float32
    ).eval()
    tokens = random_tokens(2, 8, seed=11)
    np.testing.assert_allclose(hf_run(hf, tokens)[0], hf_run(ck.hf, tokens)[0], atol=1e-5)


def test_init_params_saved_and_run_by_transformers(llama, tmp_path):
    cfg = llama.config
    params = emojax.init_params(cfg, jax.random.PRNGKey(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    emojax.save_pretrained(params, cfg, str(tmp_path / "init"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "init"), attn_implementation="eager", dtype=torch.float32
    ).eval()
    tokens = random_tokens(2, 8, seed=12)
    ref_logits, _ = hf_run(hf, tokens)
    out = jit_forward()(params, cfg, jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(out.logits), ref_logits, atol=1e-4)
    assert np.abs(ref_logits).max() > 1e-3  # not a degenerate all-zero init


def test_bfloat16_checkpoint_loads_in_float32(tmp_path):
    hf = build_hf_model("qwen2").to(torch.bfloat16)
    hf.save_pretrained(str(tmp_path / "bf16"))
    model = emojax.load_model(tmp_path / "bf16")
    assert {x.dtype for x in jax.tree.leaves(model.params)} == {jnp.dtype(jnp.float32)}
    expected = hf.model.embed_tokens.weight.float().detach().numpy()
    np.testing.assert_array_equal(np.asarray(model.params.embed), expected)
