r"""Load time and forward throughput of a GGUF model: emojax against transformers, same file.

Examples:
  python scripts/bench_gguf.py                                  # SmolLM2-135M-Instruct Q4_1
  python scripts/bench_gguf.py --model=/path/to/model.gguf --batch=4 --length=256 --json

Both run float32 on the CPU (or emojax on whatever JAX finds), on the same random tokens:
emojax's jitted `forward` (logits at every position, no capture) and transformers'
eager-attention model built by its own GGUF reader (`load_gguf_checkpoint`). Throughput is
batch x length tokens over the median of `--repeats` timed forwards after a warm-up.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct", "registered name or .gguf file.")
_BATCH = flags.DEFINE_integer("batch", 8, "sequences per forward.")
_LENGTH = flags.DEFINE_integer("length", 128, "tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed forwards per implementation.")
_TORCH = flags.DEFINE_bool("torch", True, "also time transformers on the same file.")
_JSON = flags.DEFINE_bool("json", False, "print one JSON object instead of text.")


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Median seconds of `repeats` calls of `fn` after one warm-up call; all times."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def transformers_model(path: str):
    """transformers' GGUF reader without `from_pretrained` (which needs accelerate)."""
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    config = transformers.AutoConfig.for_model(**load_gguf_checkpoint(path)["config"])
    with no_init_weights():
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32
        )
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(tensors, strict=False)
    model.tie_weights()
    return model.eval()


def main(argv):
    del argv
    import emojax
    from emojax import models

    path = _MODEL.value
    if models.is_registered(path):
        path = models.ensure_model(path)  # the fetch is not part of the load time
    b, t = _BATCH.value, _LENGTH.value
    out = {"model": _MODEL.value, "file": os.path.basename(path), "batch": b, "length": t,
           "device": str(jax.devices()[0]), "cpu_count": os.cpu_count()}  # fmt: skip

    t0 = time.perf_counter()
    model = emojax.load_model(path)
    out["emojax_load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emojax.load_model(path, tokenizer=False)
    out["emojax_load_weights_only_s"] = time.perf_counter() - t0
    tokens = np.random.default_rng(0).integers(3, model.config.vocab_size, (b, t), np.int32)
    fwd = jax.jit(emojax.forward, static_argnames=("config", "capture"))
    x = jnp.asarray(tokens)
    run = lambda: fwd(model.params, model.config, x, capture=False).logits.block_until_ready()
    t0 = time.perf_counter()
    run()
    out["emojax_compile_and_first_s"] = time.perf_counter() - t0
    sec, times = timed(run, _REPEATS.value)
    out["emojax_forward_s"], out["emojax_forward_all_s"] = sec, times
    out["emojax_tokens_per_s"] = b * t / sec

    if _TORCH.value:
        import torch

        t0 = time.perf_counter()
        hf = transformers_model(path)
        out["transformers_load_s"] = time.perf_counter() - t0
        ids = torch.from_numpy(tokens.astype(np.int64))

        def hf_run():
            with torch.no_grad():
                return hf(ids, use_cache=False).logits

        sec, times = timed(hf_run, _REPEATS.value)
        out["transformers_forward_s"], out["transformers_forward_all_s"] = sec, times
        out["transformers_tokens_per_s"] = b * t / sec
        out["torch_threads"] = torch.get_num_threads()
        out["max_abs_logit_diff"] = float(np.abs(np.asarray(run()) - hf_run().numpy()).max())
    if _JSON.value:
        print(json.dumps(out, indent=2))
        return
    for key, value in out.items():
        if not key.endswith("_all_s"):
            print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    from emojax.workdir import run_main  # emojax (and jax) load inside main, after the flags

    run_main(main)
