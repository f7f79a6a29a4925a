"""The fine-tuning benchmark (emojax.benchmark.finetune) end to end on a tiny Llama."""

from __future__ import annotations

import math

import numpy as np

import emojax
from emojax import tune
from emojax.benchmark import (
    finetune,
    format_finetune_bench,
    forward_flops,
    llama_config,
    run_finetune_bench,
)


def test_finetune_bench_reports_both_steps_against_the_roofline():
    tiny = llama_config(32, 2, 4, 64, 512)
    r = run_finetune_bench(
        batch=4, seq=24, response_tokens=8, num_layers=2, matmul_size=128, repeats=2, model=tiny
    )
    assert r["num_params"] > 0 and r["num_positions"] == 8 and r["roofline_gflops"] > 0
    for name in ("tuned", "previous", "tuned_forward", "tuned_forward_backward"):
        v = r[name]
        assert v["step_s_median"] > 0 and v["gflop"] > 0 and v["compile_s"] > 0, name
        assert math.isfinite(v["roofline_fraction"]) and v["roofline_fraction"] > 0, name
    # The previous formulation projects every position onto the vocabulary: more FLOPs.
    assert r["previous"]["gflop"] > r["tuned"]["gflop"] == r["tuned_forward_backward"]["gflop"]
    assert r["loss_diff"] < 1e-5  # same weights, same batch: the same loss
    text = format_finetune_bench(r)
    assert "% of roofline" in text and "faster than the previous formulation" in text


def test_synthetic_batch_and_flops_match_the_recipe_shapes():
    config = emojax.ModelConfig.from_hf_dict(finetune.SMOLLM2_135M)
    tokens, mask = finetune.synthetic_batch(config, 8, 112, 48)
    assert tokens.shape == mask.shape == (8, 112) and tokens.max() < config.vocab_size
    np.testing.assert_array_equal(mask.sum(1), np.linspace(12, 48, 8).round())
    assert tune.num_response_positions(mask) == 48
    # SmolLM2-135M, 8 x 111 positions: ~0.74 TFLOP per step (3 x forward), ~0.64 at P = 48.
    full = 3 * forward_flops(config, 8, 111, 111)
    assert 0.72e12 < full < 0.76e12
    assert 0.62e12 < 3 * finetune.tuned_forward_flops(config, 8, 111, 48) < 0.66e12
