"""llama.cpp control vectors: export -> import round trip, steering at the documented site,
files in repeng's and llama.cpp's layouts, and the files llama.cpp itself rejects.

The reference for the site is llama.cpp's graph (src/models/llama.cpp): `build_cvec(cur, il)`
adds `direction.il` to the output of decoder block `il`. On the transformers model that is a
forward hook on `model.layers[il]` adding the vector to the block's output, emulated below.
"""

from __future__ import annotations

import warnings

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import decoder_layers, hf_run, hooks, jit_forward, random_tokens, random_unit

import emojax
from emojax import control_vector as cvec
from emojax.vectors import VectorSet


@pytest.fixture(scope="module")
def llama(checkpoints):
    return checkpoints("llama")  # 3 layers, D = 64


def vector_set(config, seed: int = 0) -> VectorSet:
    """Two concepts x (L + 1) sites of random unit vectors, norms and scales."""
    rng = np.random.default_rng(seed)
    sites, d = config.num_layers + 1, config.d_model
    v = rng.normal(size=(2, sites, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return VectorSet(
        vectors=v,
        scales=rng.uniform(1, 2, (2, sites)).astype(np.float32),
        layer_norms=rng.uniform(2, 4, sites).astype(np.float32),
        concepts=("concern", "refusal"),
        method="diff_of_means",
        metadata={"model": "tiny-llama", "model_type": "llama", "selected_layer": {"concern": 2}},
    )


def block_output_hook(vector: np.ndarray):
    """llama.cpp's build_cvec on a transformers decoder layer: add to the block's output."""
    delta = torch.from_numpy(np.asarray(vector, np.float32))

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    return hook


def forward(ck, tokens, iv=None):
    out = jit_forward()(ck.params, ck.config, jnp.asarray(tokens), intervention=iv)
    return np.asarray(out.logits)


# ---------------------------------------------------------------------------------------------
# the mapping


def test_site_direction_mapping_and_its_limits():
    assert [cvec.site_to_direction(s, 30) for s in (2, 16, 30)] == [1, 15, 29]
    assert [cvec.direction_to_site(k, 30) for k in (1, 15, 29)] == [2, 16, 30]
    for bad in (0, 1, 31):
        with pytest.raises(ValueError, match="no llama.cpp control-vector direction"):
            cvec.site_to_direction(bad, 30)
    with pytest.raises(ValueError, match="direction.0 is invalid"):
        cvec.direction_to_site(0, 30)
    with pytest.raises(ValueError, match="beyond the last block"):
        cvec.direction_to_site(30, 30)


# ---------------------------------------------------------------------------------------------
# export -> import


def test_export_import_round_trip_is_exact(llama, tmp_path):
    vs = vector_set(llama.config)
    path = vs.export_control_vector("refusal", str(tmp_path / "v.gguf"), layers=[2, 3], coef=-1.5)

    cv = cvec.read_control_vector(path)
    assert sorted(cv.directions) == [1, 2]
    for site, k in ((2, 1), (3, 2)):
        want = vs.steering_vector("refusal", site, -1.5)
        assert cv.directions[k].dtype == np.float32
        np.testing.assert_array_equal(cv.directions[k], want)
    assert cv.model_hint == "llama"
    assert cv.metadata["controlvector.layer_count"] == 2
    assert cv.metadata["emojax.sites"] == [2, 3]
    assert cv.metadata["emojax.coef"] == -1.5
    assert "median residual" in cv.metadata["emojax.unit"]

    # The raw file, read by gguf itself, is what llama.cpp's loader checks for.
    reader = gguf.GGUFReader(path)
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and len(t.shape) == 1


def test_export_defaults_to_the_selected_layer_and_refuses_unsteerable_sites(llama, tmp_path):
    vs = vector_set(llama.config)
    path = vs.export_control_vector("concern", str(tmp_path / "c.gguf"))
    assert list(cvec.read_control_vector(path).directions) == [1]  # selected site 2
    with pytest.raises(ValueError, match="no selected layer for 'refusal'"):
        vs.export_control_vector("refusal", str(tmp_path / "r.gguf"))
    with pytest.raises(ValueError, match="sites 2..3 are exportable"):
        vs.export_control_vector("refusal", str(tmp_path / "r.gguf"), layers=1)


def test_imported_vector_steers_like_the_original(llama, tmp_path):
    cfg = llama.config
    vs = vector_set(cfg)
    path = vs.export_control_vector("concern", str(tmp_path / "v.gguf"), layers=2, coef=3.0)
    original = emojax.Intervention.add(cfg, 2, vs.steering_vector("concern", 2, 3.0))

    imported = cvec.load_intervention(cfg, path)
    for a, b in zip(jax.tree.leaves(imported), jax.tree.leaves(original), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tokens = random_tokens(2, 9, seed=21)
    steered = forward(llama, tokens, imported)
    np.testing.assert_array_equal(steered, forward(llama, tokens, original))

    half = cvec.load_intervention(cfg, path, scale=0.5)
    np.testing.assert_allclose(np.asarray(half.add_vectors), 0.5 * np.asarray(original.add_vectors))
    assert np.abs(forward(llama, tokens, half) - steered).max() > 1e-3


def test_direction_k_is_the_output_of_block_k(llama, tmp_path):
    """emojax's import equals llama.cpp's semantics (a hook on block k's output), not k - 1's."""
    cfg, hf = llama.config, llama.hf
    v = 2.0 * random_unit(cfg.d_model, 31)
    path = cvec.write_control_vector(str(tmp_path / "v.gguf"), {1: v}, model_hint="llama")
    tokens = random_tokens(2, 9, seed=22)
    got = forward(llama, tokens, cvec.load_intervention(cfg, path))

    def llama_cpp_logits(block: int) -> np.ndarray:
        handle = decoder_layers(hf)[block].register_forward_hook(block_output_hook(v))
        with hooks([handle]):
            return hf_run(hf, tokens)[0]

    np.testing.assert_allclose(got, llama_cpp_logits(1), atol=1e-4)
    assert np.abs(got - llama_cpp_logits(0)).max() > 1e-2  # an off-by-one would show
    assert np.abs(got - hf_run(hf, tokens)[0]).max() > 1e-2  # and it does steer


# ---------------------------------------------------------------------------------------------
# files written by other tools


def write_repeng_layout(path: str, directions: dict[int, np.ndarray], layer_count_type="u32"):
    """repeng's `ControlVector.export_gguf` (vgel/repeng, repeng/extract.py), line for line;
    `layer_count_type="i32"` is llama.cpp's cvector-generator (`gguf_set_val_i32`)."""
    arch = "controlvector"
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string(f"{arch}.model_hint", "llama")
    if layer_count_type == "u32":
        writer.add_uint32(f"{arch}.layer_count", len(directions))
    else:
        writer.add_int32(f"{arch}.layer_count", len(directions))
    for layer in directions.keys():
        writer.add_tensor(f"direction.{layer}", directions[layer])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("layer_count_type", ["u32", "i32"])
def test_repeng_layout_file_loads(llama, tmp_path, layer_count_type):
    cfg = llama.config
    # repeng's default layers: range(-1, -num_layers, -1) -> L-1 .. 1, in that order, each a
    # float32 PCA component (its `directions[layer]`).
    dirs = {k: random_unit(cfg.d_model, 40 + k) for k in range(cfg.num_layers - 1, 0, -1)}
    path = write_repeng_layout(str(tmp_path / "repeng.gguf"), dirs, layer_count_type)

    cv = cvec.read_control_vector(path)
    assert sorted(cv.directions) == [1, 2] and cv.model_hint == "llama"
    assert cv.sites(cfg.num_layers) == {2: cv.directions[1], 3: cv.directions[2]}
    # direction.2 steers the last block's output, which no emojax Intervention reaches.
    with pytest.raises(ValueError, match=r"direction\.2 steers the output of the last block"):
        cvec.load_intervention(cfg, path)
    with pytest.warns(UserWarning, match=r"dropped direction\.2"):
        iv = cvec.load_intervention(cfg, path, scale=2.0, final="drop")
    want = np.zeros((1, cfg.num_layers, cfg.d_model), np.float32)
    want[0, 2] = 2.0 * dirs[1]
    np.testing.assert_array_equal(np.asarray(iv.add_vectors), want)


# ---------------------------------------------------------------------------------------------
# files llama.cpp rejects (common_control_vector_load_one), rejected here too


def _write(path, tensors: dict, arch="controlvector"):
    writer = gguf.GGUFWriter(str(path), arch)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"direction.0": np.ones(64, np.float32)}, r"direction\.0 is invalid"),
        ({"direction.1": np.ones(64, np.float16)}, "F16; llama.cpp needs F32"),
        ({"direction.1": np.ones((2, 32), np.float32)}, "needs 1-D"),
        ({"direction.x": np.ones(64, np.float32)}, "not named direction.<layer>"),
        (
            {"direction.1": np.ones(64, np.float32), "direction.2": np.ones(32, np.float32)},
            "different widths",
        ),  # fmt: skip
    ],
)
def test_invalid_files_are_rejected(tmp_path, tensors, message):
    path = _write(tmp_path / "bad.gguf", tensors)
    with pytest.raises(ValueError, match=message):
        cvec.read_control_vector(path)


def test_a_model_file_or_a_wrong_width_is_rejected(llama, tmp_path):
    model_file = _write(tmp_path / "model.gguf", {"token_embd.weight": np.ones((4, 8), np.float32)},
                        arch="llama")  # fmt: skip
    with pytest.raises(ValueError, match="'llama' GGUF file, not a control vector"):
        cvec.read_control_vector(model_file)
    narrow = cvec.write_control_vector(str(tmp_path / "n.gguf"), {1: np.ones(32)}, model_hint="x")
    with pytest.raises(ValueError, match="width 32 != model d_model 64"):
        cvec.load_intervention(llama.config, narrow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching hint raises no warning
        ok = cvec.write_control_vector(
            str(tmp_path / "ok.gguf"), {1: np.ones(64)}, model_hint="llama"
        )
        cvec.load_intervention(llama.config, ok)
