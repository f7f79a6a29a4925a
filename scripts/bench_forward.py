"""Forward-pass benchmark of a ~50M-parameter Llama config with random weights.

Measures the compile time and the steady-state throughput (tokens/s) of `emojax.forward`
(`emojax.benchmark.run_forward_bench`).

Examples:
  python scripts/bench_forward.py                       # batch 8 x seq 128, float32, CPU
  python scripts/bench_forward.py --json                # one JSON line on stdout
  python scripts/bench_forward.py --dtype=bfloat16 --batch=4 --seq=256 --iters=5
"""

from __future__ import annotations

import json

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


def main(argv: list[str]) -> None:
    del argv
    from emojax.benchmark import format_forward_bench, run_forward_bench

    results = run_forward_bench(
        d_model=_D_MODEL.value, num_layers=_LAYERS.value, num_heads=_HEADS.value,
        d_ff=_D_FF.value, vocab_size=_VOCAB.value, batch=_BATCH.value, seq=_SEQ.value,
        dtype=_DTYPE.value, iters=_ITERS.value,
    )  # fmt: skip
    print(json.dumps(results) if _JSON.value else format_forward_bench(results))


if __name__ == "__main__":
    from emojax.workdir import run_main  # emojax (and jax) load inside main, after the flags

    run_main(main)
