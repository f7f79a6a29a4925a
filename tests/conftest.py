"""Shared fixtures for the foundation tests: tiny random Hugging Face checkpoints and references.

Every checkpoint is built by `transformers` (PyTorch, float32) inside the test session, its
weights re-randomised so that norm offsets and biases matter, saved with `save_pretrained` and
loaded back with `emojax.load_model`. The PyTorch model stays in memory as the reference.

Dimension letters: B batch, T time, D model, L layers, V vocab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import pathlib
from collections.abc import Callable, Iterator

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests compile ~60 tiny programs; XLA's LLVM optimisations dominate their cost (~3x) and
# buy nothing at this size. The HLO (hence the numerics under test) is unchanged. Set
# EMOJAX_TEST_FULL_OPT=1 to test fully optimised binaries.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if not os.environ.get("EMOJAX_TEST_FULL_OPT") and "xla_backend_optimization_level" not in (
    os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

torch.set_num_threads(1)  # the CI box has 2 cores shared by several workers

_TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def _tiny(**overrides) -> dict:
    return {**_TINY, **overrides}


# Each entry builds the config of one family variant. Together they cover: plain Llama, Llama 3.1
# rope scaling (theta 1e4, original 64 positions: wavelengths 6.3 / 19.9 / 62.8 / 199 hit the
# high-frequency, smooth and scaled regimes), sliding windows shorter than the test sequence,
# qkv bias, q/k norm with an explicit head_dim != D/H, multi-query attention, soft-capping that
# is actually active, query_pre_attn_scalar != head_dim, GPT-2; tied and untied embeddings.
FAMILY_CONFIGS: dict[str, Callable[[], transformers.PretrainedConfig]] = {
    "llama": lambda: transformers.LlamaConfig(
        **_tiny(num_key_value_heads=4),
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "llama3": lambda: transformers.LlamaConfig(
        **_tiny(max_position_embeddings=512),
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "mistral": lambda: transformers.MistralConfig(
        **_tiny(),
        head_dim=16,
        sliding_window=4,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "qwen2": lambda: transformers.Qwen2Config(
        **_tiny(),
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    ),
    "qwen3": lambda: transformers.Qwen3Config(
        **_tiny(),
        head_dim=24,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    ),
    "gemma": lambda: transformers.GemmaConfig(
        **_tiny(num_key_value_heads=1),
        head_dim=32,
        hidden_act="gelu_pytorch_tanh",
    ),
    "gemma2": lambda: transformers.Gemma2Config(
        **_tiny(),
        head_dim=16,
        sliding_window=5,
        query_pre_attn_scalar=24,
        attn_logit_softcapping=1.0,
        final_logit_softcapping=3.0,
    ),
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=128,
        n_embd=64,
        n_layer=3,
        n_head=4,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    ),
}
FAMILIES = tuple(FAMILY_CONFIGS)
# Families whose residual writes pass through a norm after the sublayer (no weight-orthogonal
# equivalent of directional ablation).
POST_NORM_FAMILIES = ("gemma2",)


def _is_norm(name: str) -> bool:
    return "norm" in name or ".ln_" in name


def randomise_(model: torch.nn.Module, *, std: float = 0.1) -> None:
    """Re-draws every parameter so that norm weights, offsets and biases all matter.

    Gemma norm weights are stored as offsets from 1 (the layer multiplies by 1 + w), so they
    are drawn around 0; every other norm weight is drawn around 1. Everything else (embeddings,
    projections, biases) is N(0, std), which keeps activations O(1) at D = 64.
    """
    offset_norms = model.config.model_type in ("gemma", "gemma2")
    with torch.no_grad():
        for name, p in model.named_parameters():
            mean = 1.0 if _is_norm(name) and name.endswith("weight") and not offset_norms else 0.0
            p.normal_(mean, std)


def build_hf_model(family: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A tiny float32 eager-attention causal LM of `family` with random weights."""
    torch.manual_seed(seed)
    config = FAMILY_CONFIGS[family]()
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32
    )
    randomise_(model)
    return model.eval()


@dataclasses.dataclass
class Checkpoint:
    """A saved tiny checkpoint: its PyTorch reference and the emojax model loaded from it."""

    family: str
    path: pathlib.Path
    hf: transformers.PreTrainedModel
    model: object  # emojax.Model

    @property
    def config(self):
        return self.model.config

    @property
    def params(self):
        return self.model.params


def save_checkpoint(hf: transformers.PreTrainedModel, path: pathlib.Path, **kwargs) -> None:
    hf.save_pretrained(str(path), **kwargs)


@pytest.fixture
def unreachable_index(tmp_path, monkeypatch) -> pathlib.Path:
    """An empty emojax cache and a pip whose index does not answer; returns the cache root."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMOJAX_CACHE", str(cache))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no extra index from the machine's pip.conf
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    return cache


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> Callable[[str], Checkpoint]:
    """Returns `get(family)`, building and loading each family's checkpoint once per session."""
    import emojax

    cache: dict[str, Checkpoint] = {}

    def get(family: str) -> Checkpoint:
        if family not in cache:
            hf = build_hf_model(family)
            path = tmp_path_factory.mktemp(f"ckpt_{family}")
            save_checkpoint(hf, path)
            cache[family] = Checkpoint(family, path, hf, emojax.load_model(path))
        return cache[family]

    return get


# ---------------------------------------------------------------------------------------------
# emojax call helpers


@functools.cache
def jit_forward() -> Callable:
    """`emojax.forward` under one `jax.jit`, config and the other Python args static."""
    import emojax

    return jax.jit(
        emojax.forward, static_argnames=("config", "start_layer", "return_logits", "capture")
    )


# ---------------------------------------------------------------------------------------------
# inputs


def random_tokens(B: int, T: int, *, vocab: int = 128, seed: int = 0) -> np.ndarray:
    """int32 [B, T] tokens avoiding the special ids 0, 1, 2."""
    return np.random.default_rng(seed).integers(3, vocab, size=(B, T)).astype(np.int32)


def left_pad_mask(B: int, T: int, num_pad: list[int]) -> np.ndarray:
    """int32 [B, T] attention mask with num_pad[b] padding slots on the left of row b."""
    mask = np.ones((B, T), np.int32)
    for b, n in enumerate(num_pad):
        mask[b, :n] = 0
    return mask


def hf_positions(mask: np.ndarray) -> np.ndarray:
    """Position ids of a left-padded batch: cumsum(mask) - 1, clipped at 0."""
    return np.clip(np.cumsum(mask, axis=-1) - 1, 0, None)


def random_unit(D: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=D).astype(np.float32)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------------
# PyTorch references


def hf_run(
    hf: transformers.PreTrainedModel,
    tokens: np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits [B, T, V] and hidden states (L + 1 of [B, T, D]) of the PyTorch model."""
    kwargs = {}
    if mask is not None:
        kwargs["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
        kwargs["position_ids"] = torch.from_numpy(hf_positions(mask).astype(np.int64))
    with torch.no_grad():
        out = hf(
            torch.from_numpy(tokens.astype(np.int64)),
            output_hidden_states=True,
            use_cache=False,
            **kwargs,
        )
    return out.logits.numpy(), [h.numpy() for h in out.hidden_states]


def decoder_layers(hf: transformers.PreTrainedModel) -> torch.nn.ModuleList:
    if hf.config.model_type == "gpt2":
        return hf.transformer.h
    return hf.model.layers


def residual_write_modules(hf: transformers.PreTrainedModel) -> list[torch.nn.Module]:
    """Every module whose output is added to the residual stream, as it is added.

    Embeddings (plus GPT-2's learned positions), then per layer the attention and MLP outputs;
    for Gemma 2 the write is the output of the post-attention / post-feedforward norm.
    """
    family = hf.config.model_type
    if family == "gpt2":
        mods = [hf.transformer.wte, hf.transformer.wpe]
        for block in hf.transformer.h:
            mods += [block.attn, block.mlp]
        return mods
    mods = [hf.model.embed_tokens]
    for layer in hf.model.layers:
        if family == "gemma2":
            mods += [layer.post_attention_layernorm, layer.post_feedforward_layernorm]
        else:
            mods += [layer.self_attn, layer.mlp]
    return mods


@contextlib.contextmanager
def hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def steering_hook(delta: torch.Tensor) -> Callable:
    """A forward-pre-hook (with_kwargs) that adds `delta` ([D] or [B, T, D]) to hidden_states."""

    def hook(module, args, kwargs):
        if args:
            return (args[0] + delta,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = kwargs["hidden_states"] + delta
        return args, kwargs

    return hook


@contextlib.contextmanager
def steered(
    hf: transformers.PreTrainedModel,
    layer: int,
    vector: np.ndarray,
    coef: float,
    positions: np.ndarray | None = None,
) -> Iterator[None]:
    """Adds coef * vector to the input of decoder layer `layer` (optionally at a [B, T] mask)."""
    delta = coef * torch.from_numpy(np.asarray(vector, np.float32))
    if positions is not None:
        delta = delta * torch.from_numpy(np.asarray(positions, np.float32))[..., None]
    handle = decoder_layers(hf)[layer].register_forward_pre_hook(
        steering_hook(delta), with_kwargs=True
    )
    with hooks([handle]):
        yield


def _project_out(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return x - (x @ r)[..., None] * r


@contextlib.contextmanager
def ablated(hf: transformers.PreTrainedModel, direction: np.ndarray) -> Iterator[None]:
    """Projects the unit `direction` out of every write to the residual stream (forward hooks)."""
    r = torch.from_numpy(np.asarray(direction, np.float32))
    r = r / r.norm()

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (_project_out(output[0], r),) + tuple(output[1:])
        return _project_out(output, r)

    handles = [m.register_forward_hook(hook) for m in residual_write_modules(hf)]
    with hooks(handles):
        yield


def orthogonalised(hf: transformers.PreTrainedModel, direction: np.ndarray):
    """A copy of `hf` with the unit direction orthogonalised out of every residual-writing weight.

    Tied embeddings are untied first so that the unembedding stays unchanged (the hook
    reference never touches the read-out).
    """
    import copy

    model = copy.deepcopy(hf)
    r = torch.from_numpy(np.asarray(direction, np.float32))
    r = r / r.norm()
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())

        def rows(w):  # [N, D] tables: embeddings
            w.copy_(w - (w @ r)[:, None] * r[None, :])

        def linear_out(lin):  # nn.Linear, weight [D_out, D_in], writes D_out
            lin.weight.copy_(lin.weight - r[:, None] * (r @ lin.weight)[None, :])
            if lin.bias is not None:
                lin.bias.copy_(lin.bias - (lin.bias @ r) * r)

        def conv1d_out(conv):  # GPT-2 Conv1D, weight [D_in, D_out]
            conv.weight.copy_(conv.weight - (conv.weight @ r)[:, None] * r[None, :])
            conv.bias.copy_(conv.bias - (conv.bias @ r) * r)

        if model.config.model_type == "gpt2":
            rows(model.transformer.wte.weight)
            rows(model.transformer.wpe.weight)
            for block in model.transformer.h:
                conv1d_out(block.attn.c_proj)
                conv1d_out(block.mlp.c_proj)
        else:
            rows(model.model.embed_tokens.weight)
            for layer in model.model.layers:
                linear_out(layer.self_attn.o_proj)
                linear_out(layer.mlp.down_proj)
    return model


def hf_greedy(
    hf: transformers.PreTrainedModel,
    tokens: np.ndarray,
    mask: np.ndarray,
    max_new_tokens: int,
) -> np.ndarray:
    """transformers greedy generate, never stopping early (no eos), int [B, T + new]."""
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        out = hf.generate(
            torch.from_numpy(tokens.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out.numpy()


@pytest.fixture(scope="session")
def smoke_zoo(tmp_path_factory) -> dict[str, str]:
    """{model name: checkpoint dir} of the smoke zoo (configs/zoo.py:smoke), built once.

    Built into <basetemp>/smoke_zoo (the parent of the per-worker basetemp under xdist, so all
    workers share one build; `build_zoo` holds a file lock), the directory tests/test_zoo.py
    uses too: whichever test asks first builds it, every later request is a cache hit.
    """
    import os

    from configs.zoo import get_config
    from emojax.zoo import build_zoo

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return build_zoo(get_config("smoke"), base / "smoke_zoo")


@pytest.fixture
def offline_pip(tmp_path, monkeypatch):
    """EMOJAX_CACHE in tmp_path and pip served from tmp_path/wheels only (no network)."""

    monkeypatch.setenv("EMOJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no index from the machine's pip.conf
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    return tmp_path / "wheels"
