"""Measurement helpers of the benchmarks: wall-clock timings and the matmul FLOPs of a forward.

Timings are `time.perf_counter` seconds around calls that block until their results exist;
FLOPs count 2 per multiply-add.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax

from emojax.config import ModelConfig


def timed(fn: Callable, *args) -> float:
    """Seconds of one call `fn(*args)`, blocking until every output array is ready."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def time_calls(fn: Callable[[], object], iters: int) -> list[float]:
    """Seconds of each of `iters` back-to-back calls of `fn` (which blocks on its own)."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Median seconds of `repeats` calls of `fn` after one warm-up call; all times."""
    fn()
    times = time_calls(fn, repeats)
    return statistics.median(times), times


def forward_flops(config: ModelConfig, rows: int, t: int, logit_positions: int) -> float:
    """Matmul FLOPs of a forward pass (2 per multiply-add), attention scores included.

    Args:
      config: the model.
      rows: sequences B.
      t: tokens per sequence T (attention counts the full T x T square).
      logit_positions: positions per sequence projected onto the vocabulary.
    """
    c = config
    per_token = c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    per_token += 3 * c.d_model * c.d_ff
    attn = 2 * c.num_heads * c.head_dim * t  # q.k and p.v per query (full square)
    layers = 2 * rows * t * c.num_layers * (per_token + attn)
    return layers + 2 * rows * logit_positions * c.d_model * c.vocab_size
