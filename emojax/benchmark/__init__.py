"""Benchmarks of emojax against its PyTorch references; the library behind scripts/bench*.py.

* `steering`: sweeps and steered generation vs transformers + forward hooks
  (`run_steering_bench`, scripts/bench.py).
* `forward`: compile time and tokens/s of `emojax.forward` (`run_forward_bench`,
  scripts/bench_forward.py).
* `finetune`: the safety tune step against the same run's f32 matmul roofline
  (`run_finetune_bench`, scripts/bench_finetune.py).
* `gguf`: load time and forward throughput of a GGUF file vs transformers' GGUF reader
  (`run_gguf_bench`, scripts/bench_gguf.py).
* `torch_ref`: the PyTorch references (`TorchBaseline`, `transformers_gguf_model`).
* `measure`: timing helpers and the matmul FLOPs of a forward.

Each `run_*` returns a JSON-ready dict and has a `format_*` companion giving the text the
script prints. The monitoring-probe benchmark is `emojax.probes.bench_probes`.
"""

from emojax.benchmark.finetune import format_finetune_bench, run_finetune_bench
from emojax.benchmark.forward import format_forward_bench, llama_config, run_forward_bench
from emojax.benchmark.gguf import format_gguf_bench, run_gguf_bench
from emojax.benchmark.measure import forward_flops, median_time, time_calls, timed
from emojax.benchmark.steering import (
    SteeringBenchSpec,
    bench_model_config,
    bench_prompts,
    format_steering_table,
    run_steering_bench,
)
from emojax.benchmark.torch_ref import TorchBaseline, transformers_gguf_model

__all__ = [
    "SteeringBenchSpec",
    "TorchBaseline",
    "bench_model_config",
    "bench_prompts",
    "format_finetune_bench",
    "format_forward_bench",
    "format_gguf_bench",
    "format_steering_table",
    "forward_flops",
    "llama_config",
    "median_time",
    "run_finetune_bench",
    "run_forward_bench",
    "run_gguf_bench",
    "run_steering_bench",
    "time_calls",
    "timed",
    "transformers_gguf_model",
]
