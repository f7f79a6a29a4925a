r"""Load time and forward throughput of a GGUF model: emojax against transformers, same file.

Examples:
  python scripts/bench_gguf.py                                  # SmolLM2-135M-Instruct Q4_1
  python scripts/bench_gguf.py --model=/path/to/model.gguf --batch=4 --length=256 --json

Both run float32 on the CPU (or emojax on whatever JAX finds), on the same random tokens:
emojax's jitted `forward` (logits at every position, no capture) and transformers'
eager-attention model built by its own GGUF reader (`load_gguf_checkpoint`). Throughput is
batch x length tokens over the median of `--repeats` timed forwards after a warm-up
(`emojax.benchmark.run_gguf_bench`).
"""

from __future__ import annotations

import json

from absl import flags

_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct", "registered name or .gguf file.")
_BATCH = flags.DEFINE_integer("batch", 8, "sequences per forward.")
_LENGTH = flags.DEFINE_integer("length", 128, "tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed forwards per implementation.")
_TORCH = flags.DEFINE_bool("torch", True, "also time transformers on the same file.")
_JSON = flags.DEFINE_bool("json", False, "print one JSON object instead of text.")


def main(argv):
    del argv
    from emojax.benchmark import format_gguf_bench, run_gguf_bench

    out = run_gguf_bench(
        _MODEL.value, batch=_BATCH.value, length=_LENGTH.value, repeats=_REPEATS.value,
        torch=_TORCH.value,
    )  # fmt: skip
    print(json.dumps(out, indent=2) if _JSON.value else format_gguf_bench(out))


if __name__ == "__main__":
    from emojax.workdir import run_main  # emojax (and jax) load inside main, after the flags

    run_main(main)
