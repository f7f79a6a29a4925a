"""The GGUF benchmark: load time and forward throughput of one GGUF file, emojax vs transformers.

Both run float32 (emojax on whatever JAX finds) on the same random tokens: emojax's jitted
`forward` (logits at every position, no capture) and transformers' eager-attention model built
by its own GGUF reader. Throughput is B x T tokens over the median of the timed forwards after
a warm-up. Dimension letters: B batch, T tokens per sequence.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import emojax
from emojax import models
from emojax.benchmark.measure import median_time
from emojax.benchmark.torch_ref import transformers_gguf_model


def run_gguf_bench(
    model: str = "smollm2-135m-instruct",
    *,
    batch: int = 8,
    length: int = 128,
    repeats: int = 5,
    torch: bool = True,
) -> dict:
    """Times loading and forwards of a GGUF model with emojax and (optionally) transformers.

    Args:
      model: a registered model name (fetched first: the fetch is not part of the load time)
        or a .gguf file.
      batch: B, sequences per forward.
      length: T, tokens per sequence.
      repeats: timed forwards per implementation.
      torch: also time transformers on the same file and compare the logits.

    Returns:
      {"model", "file", "batch", "length", "device", "cpu_count", "emojax_load_s",
       "emojax_load_weights_only_s", "emojax_compile_and_first_s", "emojax_forward_s",
       "emojax_forward_all_s", "emojax_tokens_per_s"} and with `torch` the
      "transformers_*" counterparts, "torch_threads" and "max_abs_logit_diff".
    """
    path = model
    if models.is_registered(path):
        path = models.ensure_model(path)  # the fetch is not part of the load time
    b, t = batch, length
    out = {"model": model, "file": os.path.basename(path), "batch": b, "length": t,
           "device": str(jax.devices()[0]), "cpu_count": os.cpu_count()}  # fmt: skip

    t0 = time.perf_counter()
    loaded = emojax.load_model(path)
    out["emojax_load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emojax.load_model(path, tokenizer=False)
    out["emojax_load_weights_only_s"] = time.perf_counter() - t0
    tokens = np.random.default_rng(0).integers(3, loaded.config.vocab_size, (b, t), np.int32)
    fwd = jax.jit(emojax.forward, static_argnames=("config", "capture"))
    x = jnp.asarray(tokens)
    run = lambda: fwd(loaded.params, loaded.config, x, capture=False).logits.block_until_ready()
    t0 = time.perf_counter()
    run()
    out["emojax_compile_and_first_s"] = time.perf_counter() - t0
    sec, times = median_time(run, repeats)
    out["emojax_forward_s"], out["emojax_forward_all_s"] = sec, times
    out["emojax_tokens_per_s"] = b * t / sec

    if torch:
        import torch as pt

        t0 = time.perf_counter()
        hf = transformers_gguf_model(path)
        out["transformers_load_s"] = time.perf_counter() - t0
        ids = pt.from_numpy(tokens.astype(np.int64))

        def hf_run():
            with pt.no_grad():
                return hf(ids, use_cache=False).logits

        sec, times = median_time(hf_run, repeats)
        out["transformers_forward_s"], out["transformers_forward_all_s"] = sec, times
        out["transformers_tokens_per_s"] = b * t / sec
        out["torch_threads"] = pt.get_num_threads()
        out["max_abs_logit_diff"] = float(np.abs(np.asarray(run()) - hf_run().numpy()).max())
    return out


def format_gguf_bench(results: dict) -> str:
    """One `key value` line per number of a `run_gguf_bench` result (per-repeat lists left out)."""
    return "\n".join(
        f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}"
        for key, value in results.items()
        if not key.endswith("_all_s")
    )
