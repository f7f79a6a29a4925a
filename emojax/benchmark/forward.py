"""The forward-pass benchmark: compile time and steady-state tokens/s of `emojax.forward`.

On a Llama config with random weights (`emojax.init_params`), with and without capture of the
residual stream. Dimension letters: B batch, T sequence, D model, L layers, H heads, F MLP
width, V vocabulary.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp

import emojax
from emojax.benchmark.measure import time_calls


def llama_config(
    d_model: int, num_layers: int, num_heads: int, d_ff: int, vocab: int, **extra
) -> dict:
    """A Llama config.json dictionary (untied embeddings, full multi-head attention).

    Args:
      d_model, num_layers, num_heads, d_ff, vocab: D, L, H (= key/value heads), F, V.
      **extra: further config.json fields (e.g. `pad_token_id`).
    """
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": d_model,
        "intermediate_size": d_ff,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        **extra,
    }


def run_forward_bench(
    *,
    d_model: int = 512,
    num_layers: int = 8,
    num_heads: int = 8,
    d_ff: int = 1376,
    vocab_size: int = 32000,
    batch: int = 8,
    seq: int = 128,
    dtype: str = "float32",
    iters: int = 10,
) -> dict:
    """Times `emojax.forward` on random tokens: compile, median and fastest step, tokens/s.

    Two variants: the default (logits + captured residual stream, "forward") and logits only
    ("forward_no_capture"); each compiled ahead of time, warmed up once, then timed `iters`
    times.

    Returns:
      {"device", "cpu_count", "load_avg_1m", "num_params", "config": {...}, "batch", "seq",
       "dtype", "forward": {"compile_s", "step_s_median", "step_s_min", "tokens_per_s"},
       "forward_no_capture": {...}}
    """
    config = emojax.ModelConfig.from_hf_dict(
        llama_config(d_model, num_layers, num_heads, d_ff, vocab_size)
    )
    params = emojax.init_params(config, jax.random.PRNGKey(0), dtype=jnp.dtype(dtype))
    num_params = sum(x.size for x in jax.tree.leaves(params))
    b, t = batch, seq
    tokens = jax.random.randint(jax.random.PRNGKey(1), (b, t), 0, config.vocab_size, jnp.int32)

    results = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "num_params": num_params,
        "config": {
            "d_model": config.d_model,
            "num_layers": config.num_layers,
            "num_heads": config.num_heads,
            "d_ff": config.d_ff,
            "vocab_size": config.vocab_size,
        },
        "batch": b,
        "seq": t,
        "dtype": dtype,
    }
    for name, capture in (("forward", True), ("forward_no_capture", False)):
        start = time.perf_counter()
        compiled = emojax.forward.lower(params, config, tokens, capture=capture).compile()
        compile_s = time.perf_counter() - start
        run = lambda: jax.block_until_ready(compiled(params, tokens))  # noqa: B023
        run()  # warm-up
        times = time_calls(run, iters)
        median = statistics.median(times)
        results[name] = {
            "compile_s": round(compile_s, 3),
            "step_s_median": round(median, 4),
            "step_s_min": round(min(times), 4),
            "tokens_per_s": round(b * t / median, 1),
        }
    return results


def format_forward_bench(results: dict) -> str:
    """The human-readable lines of a `run_forward_bench` result."""
    r = results
    num_params = r["num_params"]
    lines = [
        f"device {r['device']}, {r['cpu_count']} CPUs, load {r['load_avg_1m']}",
        f"params {num_params / 1e6:.1f}M ({num_params:,}), batch {r['batch']} x seq {r['seq']}, "
        f"{r['dtype']}",
    ]
    for name in ("forward", "forward_no_capture"):
        v = r[name]
        lines.append(
            f"{name:>19}: compile {v['compile_s']:.2f} s, step {v['step_s_median'] * 1e3:.1f} ms "
            f"(min {v['step_s_min'] * 1e3:.1f}), {v['tokens_per_s']:,.0f} tokens/s"
        )
    return "\n".join(lines)
