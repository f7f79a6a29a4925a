r"""Benchmark: emojax steering sweeps against the PyTorch forward-hook baseline.

On one ~50M-parameter Llama with random weights (d_model 512, 8 layers, 8 heads, d_ff 1376,
vocab 32000), with the same prompts and dtype, times a steering sweep's prefill readout and
short steered generations against transformers + a forward-pre-hook, emojax `forward` with
and without an intervention or capture, and the forward's FLOP/s against same-run matmuls.
The benchmark is `emojax.benchmark.run_steering_bench` (its module docstring says what is
measured and how); every flag but --json is a field of `SteeringBenchSpec`.

Examples:
  python scripts/bench.py                 # table
  python scripts/bench.py --json          # one JSON object
  python scripts/bench.py --quick --json  # fast smoke
  python scripts/bench.py --probes        # add the probes benchmark row
"""

from __future__ import annotations

import dataclasses
import json

from absl import flags

from emojax.benchmark import SteeringBenchSpec, format_steering_table, run_steering_bench
from emojax.workdir import run_main

FLAGS = flags.FLAGS
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
flags.DEFINE_bool("quick", False, "Small sizes and one repetition (smoke test).")
flags.DEFINE_bool("probes", False, "Add a row from emojax.probes.bench_probes.")
flags.DEFINE_integer("num_prompts", 8, "Prompts N.")
flags.DEFINE_integer("prompt_len", 32, "Padded prompt length T.")
flags.DEFINE_integer("num_vectors", 2, "Steering vectors.")
flags.DEFINE_integer("num_coefs", 8, "Coefficients per vector (conditions = vectors x coefs).")
flags.DEFINE_integer("new_tokens", 8, "Generated tokens per response.")
flags.DEFINE_integer("layer", -1, "Injection layer (-1 = the middle layer).")
flags.DEFINE_integer("reps", 5, "Repetitions of each measurement (median reported).")
flags.DEFINE_string("dtype", "float32", "float32 or bfloat16 (both implementations).")
flags.DEFINE_integer("d_model", 512, "Model width (bigger configs for accelerators).")
flags.DEFINE_integer("num_layers", 8, "Layers.")
flags.DEFINE_integer("num_heads", 8, "Heads.")
flags.DEFINE_integer("d_ff", 1376, "MLP width.")
flags.DEFINE_integer("vocab", 32000, "Vocabulary.")
flags.DEFINE_bool("torch", True, "Run the PyTorch baseline.")
flags.DEFINE_list("torch_batches", [], "Baseline batch sizes to try ('' = 4, N).")
flags.DEFINE_string("torch_device", "", "Torch device ('' = cuda when available, else cpu).")
flags.DEFINE_float("peak_tflops", 0.0, "Nominal peak TFLOP/s of the device (adds 'mfu').")


def main(argv):
    del argv
    fields = {f.name: FLAGS[f.name].value for f in dataclasses.fields(SteeringBenchSpec)}
    results = run_steering_bench(SteeringBenchSpec(**fields))
    if FLAGS.json:
        print(json.dumps(results, default=float))
        return
    print(format_steering_table(results))


if __name__ == "__main__":
    run_main(main)
