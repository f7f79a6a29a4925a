"""Forward-pass benchmark of a ~50M-parameter Llama config with random weights.

Measures the compile time and the steady-state throughput (tokens/s) of `emojax.forward`.

Examples:
  python scripts/bench_forward.py                       # batch 8 x seq 128, float32, CPU
  python scripts/bench_forward.py --json                # one JSON line on stdout
  python scripts/bench_forward.py --dtype=bfloat16 --batch=4 --seq=256 --iters=5
"""

from __future__ import annotations

import json
import os
import statistics
import time

from absl import flags

_D_MODEL = flags.DEFINE_integer("d_model", 512, "Residual width D.")
_LAYERS = flags.DEFINE_integer("num_layers", 8, "Decoder layers L.")
_HEADS = flags.DEFINE_integer("num_heads", 8, "Attention heads H (= key/value heads).")
_D_FF = flags.DEFINE_integer("d_ff", 1376, "MLP width F.")
_VOCAB = flags.DEFINE_integer("vocab_size", 32000, "Vocabulary V.")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch size B.")
_SEQ = flags.DEFINE_integer("seq", 128, "Sequence length T.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed forward passes (after one warm-up).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def llama_config(d_model: int, num_layers: int, num_heads: int, d_ff: int, vocab: int) -> dict:
    """A Llama config.json dictionary (untied embeddings, full multi-head attention)."""
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
    }


def _time_calls(fn, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str]) -> None:
    del argv
    import jax
    import jax.numpy as jnp

    import emojax

    config = emojax.ModelConfig.from_hf_dict(
        llama_config(_D_MODEL.value, _LAYERS.value, _HEADS.value, _D_FF.value, _VOCAB.value)
    )
    dtype = jnp.dtype(_DTYPE.value)
    params = emojax.init_params(config, jax.random.PRNGKey(0), dtype=dtype)
    num_params = sum(x.size for x in jax.tree.leaves(params))
    b, t = _BATCH.value, _SEQ.value
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
        "dtype": _DTYPE.value,
    }
    # Two variants: the default (logits + captured residual stream) and logits only.
    for name, capture in (("forward", True), ("forward_no_capture", False)):
        start = time.perf_counter()
        compiled = emojax.forward.lower(params, config, tokens, capture=capture).compile()
        compile_s = time.perf_counter() - start
        run = lambda: jax.block_until_ready(compiled(params, tokens))  # noqa: B023
        run()  # warm-up
        times = _time_calls(run, _ITERS.value)
        median = statistics.median(times)
        results[name] = {
            "compile_s": round(compile_s, 3),
            "step_s_median": round(median, 4),
            "step_s_min": round(min(times), 4),
            "tokens_per_s": round(b * t / median, 1),
        }

    if _JSON.value:
        print(json.dumps(results))
        return
    print(f"device {results['device']}, {results['cpu_count']} CPUs, load {results['load_avg_1m']}")
    print(f"params {num_params / 1e6:.1f}M ({num_params:,}), batch {b} x seq {t}, {_DTYPE.value}")
    for name in ("forward", "forward_no_capture"):
        r = results[name]
        print(
            f"{name:>19}: compile {r['compile_s']:.2f} s, step {r['step_s_median'] * 1e3:.1f} ms "
            f"(min {r['step_s_min'] * 1e3:.1f}), {r['tokens_per_s']:,.0f} tokens/s"
        )


if __name__ == "__main__":
    from emojax.workdir import run_main  # emojax (and jax) load inside main, after the flags

    run_main(main)
