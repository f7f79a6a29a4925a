"""Fine-tuning benchmark: the safety tune step against the same run's f32 matmul roofline.

On a SmolLM2-135M-shaped model with random weights (nothing is downloaded), at the safety
recipe's shapes, times the tune step, its previous formulation and a large f32 matmul in
interleaved repetitions, and prints each step's FLOP/s as a fraction of the matmul's
(`emojax.benchmark.run_finetune_bench`, whose module docstring says what is measured).

Examples:
  python scripts/bench_finetune.py                  # batch 8 x seq 112, 30 layers, CPU
  python scripts/bench_finetune.py --json           # one JSON line on stdout
  python scripts/bench_finetune.py --num_layers=4 --repeats=2 --nobreakdown  # quick
"""

from __future__ import annotations

import json

from absl import flags

_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step B.")
_SEQ = flags.DEFINE_integer("seq", 112, "Tokens per sequence T.")
_RESPONSE = flags.DEFINE_integer("response_tokens", 48, "Longest response (sets P).")
_LAYERS = flags.DEFINE_integer("num_layers", 30, "Decoder layers L (SmolLM2-135M: 30).")
_MATMUL = flags.DEFINE_integer("matmul_size", 4096, "n of the roofline's [n, n] x [n, n].")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved repetitions (medians reported).")
_PREVIOUS = flags.DEFINE_bool("previous", True, "Also time the previous step formulation.")
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "Also time forward and forward+backward.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the lines.")


def main(argv: list[str]) -> None:
    del argv
    from emojax.benchmark import format_finetune_bench, run_finetune_bench

    results = run_finetune_bench(
        batch=_BATCH.value, seq=_SEQ.value, response_tokens=_RESPONSE.value,
        num_layers=_LAYERS.value, matmul_size=_MATMUL.value, repeats=_REPEATS.value,
        previous=_PREVIOUS.value, breakdown=_BREAKDOWN.value,
    )  # fmt: skip
    print(json.dumps(results) if _JSON.value else format_finetune_bench(results))


if __name__ == "__main__":
    from emojax.workdir import run_main  # emojax (and jax) load inside main, after the flags

    run_main(main)
