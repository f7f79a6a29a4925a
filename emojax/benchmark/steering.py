"""The steering benchmark: emojax sweeps and steered generation against PyTorch forward hooks.

On one Llama with random weights (`emojax.init_params`, exported with `emojax.save_pretrained`
so transformers' LlamaForCausalLM loads the very same weights), with the same prompts and
dtype, `run_steering_bench` times:

(a) a steering sweep's prefill readout (refusal score at the first response position for
    every condition x prompt): emojax (prefix reuse, conditions folded into the batch,
    logits at one position) vs transformers + a forward-pre-hook adding the vector, one
    forward per condition, at its best batch size; and short steered greedy generations:
    `emojax.sweep.steered_generate` (vmapped conditions, shared prompt prefix) vs HF
    `generate` with the hook, per condition;
(b) emojax `forward` without / with an intervention and with capture of every layer;
(c) achieved FLOP/s of the forward pass against same-run matmuls of the model's shapes
    ([N*T, D] x [D, F] and x [D, V], the faster one: the roofline of this machine).

Measurements are interleaved and repeated; speedups are ratios of medians (best-of-reps
ratios are reported too), overheads medians of back-to-back paired ratios (the CPU may be
shared). Both implementations' readouts are compared for agreement.

Dimension letters: C conditions (vectors x coefficients), N prompts, T prompt tokens,
W generated tokens, D model, F MLP width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import emojax
from emojax import readouts as ro
from emojax import sweep
from emojax.benchmark.forward import llama_config
from emojax.benchmark.measure import forward_flops, timed
from emojax.benchmark.torch_ref import TorchBaseline


@dataclasses.dataclass(frozen=True)
class SteeringBenchSpec:
    """Sizes and switches of one steering benchmark run (the flags of scripts/bench.py).

    Attributes:
      quick: small sizes and one repetition (a smoke test; overrides the sizes below).
      probes: add a row from `emojax.probes.bench_probes`.
      num_prompts: N. prompt_len: padded T. num_vectors, num_coefs: C = vectors x coefs.
      new_tokens: W. layer: the injection layer (-1 = the middle layer).
      reps: repetitions of each measurement (median reported).
      dtype: "float32" or "bfloat16" (both implementations).
      d_model, num_layers, num_heads, d_ff, vocab: the model's shape.
      torch: run the PyTorch baseline. torch_batches: its batch sizes to try (() = 4, N).
      torch_device: "" = cuda when available, else cpu.
      peak_tflops: nominal peak TFLOP/s of the device (> 0 adds "mfu" and "sweep_mfu").
    """

    quick: bool = False
    probes: bool = False
    num_prompts: int = 8
    prompt_len: int = 32
    num_vectors: int = 2
    num_coefs: int = 8
    new_tokens: int = 8
    layer: int = -1
    reps: int = 5
    dtype: str = "float32"
    d_model: int = 512
    num_layers: int = 8
    num_heads: int = 8
    d_ff: int = 1376
    vocab: int = 32000
    torch: bool = True
    torch_batches: Sequence[int | str] = ()
    torch_device: str = ""
    peak_tflops: float = 0.0

    def resolved(self) -> SteeringBenchSpec:
        """The spec with `quick`'s sizes applied."""
        if not self.quick:
            return self
        return dataclasses.replace(
            self, num_prompts=4, prompt_len=16, num_vectors=1, num_coefs=2, new_tokens=4, reps=1
        )


def bench_model_config(spec: SteeringBenchSpec) -> emojax.ModelConfig:
    """The benchmark's Llama (pad token 0, untied embeddings) at the spec's shape."""
    return emojax.ModelConfig.from_hf_dict(
        llama_config(
            spec.d_model, spec.num_layers, spec.num_heads, spec.d_ff, spec.vocab, pad_token_id=0
        )
    )


def bench_prompts(
    config: emojax.ModelConfig, n: int, t: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random int32 [N, T] prompts avoiding ids 0-2, left-padded to lengths T-7..T; mask."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, config.vocab_size, size=(n, t)).astype(np.int32)
    mask = np.ones((n, t), np.int32)
    for i in range(n):  # left padding: lengths t-7..t
        pad = i % 8
        tokens[i, :pad] = 0
        mask[i, :pad] = 0
    return tokens, mask


@dataclasses.dataclass
class _Setup:
    """Everything both implementations share: model, prompts, conditions, readout."""

    spec: SteeringBenchSpec
    config: emojax.ModelConfig
    layer: int
    params: emojax.Params
    tokens: np.ndarray  # [N, T]
    mask: np.ndarray  # [N, T]
    units: np.ndarray  # [num_vectors, D]
    steer: np.ndarray  # [C, D]
    refusal_ids: np.ndarray
    rng: np.random.Generator  # continues after the vectors (the matmul operands)


def _setup(spec: SteeringBenchSpec) -> _Setup:
    dtype = jnp.bfloat16 if spec.dtype == "bfloat16" else jnp.float32
    config = bench_model_config(spec)
    layer = spec.layer % config.num_layers if spec.layer >= 0 else config.num_layers // 2
    params = jax.jit(emojax.init_params, static_argnums=(0, 2))(
        config, jax.random.PRNGKey(0), dtype
    )
    tokens, mask = bench_prompts(config, spec.num_prompts, spec.prompt_len)
    rng = np.random.default_rng(1)
    units = rng.standard_normal((spec.num_vectors, config.d_model)).astype(np.float32)
    units /= np.linalg.norm(units, axis=-1, keepdims=True)
    coefs = np.linspace(-2.0, 2.0, spec.num_coefs)
    # Random init residual norms are ~1 at layer l; a coefficient of 2 visibly steers.
    steer = np.concatenate([c * units for c in coefs])
    refusal_ids = np.arange(3, 11, dtype=np.int32)
    return _Setup(spec, config, layer, params, tokens, mask, units, steer, refusal_ids, rng)


def _emojax_programs(s: _Setup) -> dict[str, Callable]:
    """The timed emojax calls (no arguments) and the two roofline matmuls (x, w) -> x @ w."""
    config, params, layer, spec = s.config, s.params, s.layer, s.spec
    n, t, num_cond = spec.num_prompts, spec.prompt_len, s.steer.shape[0]
    dtype = jnp.bfloat16 if spec.dtype == "bfloat16" else jnp.float32
    refusal = ro.refusal_mask(s.refusal_ids, config.vocab_size)
    jt, jm, js = jnp.asarray(s.tokens), jnp.asarray(s.mask), jnp.asarray(s.steer)
    mem_rows = sweep.rows_for_budget(sweep.prefill_row_bytes(config, t, layer, 1, False), 2048)
    chunk = max(1, min(num_cond, mem_rows // n))

    def emojax_sweep():
        resid = sweep._base_pass(params, config, jt, jm, refusal)[0][layer]
        outs = []
        for i in range(0, num_cond, chunk):
            v = js[i : i + chunk]
            if v.shape[0] < chunk:
                v = jnp.concatenate([v, jnp.zeros((chunk - v.shape[0], v.shape[1]), v.dtype)])
            outs.append(
                sweep.steered_eval(
                    params,
                    config,
                    jt,
                    jm,
                    resid,
                    v,
                    refusal,
                    jnp.zeros((1, config.d_model)),
                    start_layer=layer,
                    readout=None,
                )[0]
            )
        return jnp.concatenate(outs)[:num_cond]

    def emojax_generate():
        return sweep.steered_generate(
            params, config, jt, jm, js, layer=layer, max_new_tokens=spec.new_tokens
        )

    iv = emojax.Intervention.add(config, layer, jnp.asarray(s.units[0]))
    fwd = jax.jit(emojax.forward, static_argnames=("config", "capture"))
    matmul = jax.jit(lambda a, b: a @ b)
    x = jnp.asarray(s.rng.standard_normal((n * t, config.d_model)), dtype)
    # The roofline: the faster of the model's two matmul shapes (MLP width, vocabulary).
    wmat = jnp.asarray(s.rng.standard_normal((config.d_model, config.d_ff)), dtype)
    wvoc = jnp.asarray(s.rng.standard_normal((config.d_model, config.vocab_size)), dtype)
    return {
        "sweep": emojax_sweep,
        "generate": emojax_generate,
        "forward": lambda: fwd(params, config, jt, attention_mask=jm, capture=False).logits,
        "forward_iv": lambda: (
            fwd(params, config, jt, attention_mask=jm, intervention=iv, capture=False).logits
        ),
        "forward_capture": lambda: fwd(params, config, jt, attention_mask=jm, capture=True),
        "matmul": lambda: matmul(x, wmat),
        "matmul_vocab": lambda: matmul(x, wvoc),
    }


def _torch_baseline(s: _Setup, programs: dict, results: dict) -> tuple[TorchBaseline, dict]:
    """Loads the baseline, checks agreement (a warm-up too), picks its best batch sizes."""
    import torch

    spec, n = s.spec, s.spec.num_prompts
    batches = [n] if spec.quick else sorted({b for b in (4, n) if b <= n})
    if spec.torch_batches:
        batches = sorted({min(int(b), n) for b in spec.torch_batches})
    with tempfile.TemporaryDirectory() as tmp:
        emojax.save_pretrained(s.params, s.config, tmp)
        torch_dtype = torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32
        device = spec.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = TorchBaseline(tmp, s.layer, torch_dtype, device)
        results["torch_device"] = device
    results["torch_threads"] = torch.get_num_threads()
    # Agreement (and warm-up) before timing.
    scores_t = model.refusal_scores(s.tokens, s.mask, s.steer, s.refusal_ids, n)
    scores_j = np.asarray(programs["sweep"]())
    results["max_refusal_score_diff"] = float(np.abs(scores_t - scores_j).max())
    gen_t = model.generate(s.tokens, s.mask, s.steer[:2], spec.new_tokens, n)
    gen_j = np.asarray(programs["generate"]())[:2]
    results["generated_token_agreement"] = float((gen_t == gen_j).mean())
    # Best batch size of the baseline (one timing each, then the best is repeated).
    best = {}
    for kind in ("prefill", "generate"):
        per_batch = {}
        for b in batches:
            t0 = time.perf_counter()
            if kind == "prefill":
                model.refusal_scores(s.tokens, s.mask, s.steer, s.refusal_ids, b)
            else:
                model.generate(s.tokens, s.mask, s.steer, spec.new_tokens, b)
            per_batch[b] = time.perf_counter() - t0
        best[kind] = min(per_batch, key=per_batch.get)
        results[f"torch_{kind}_s_by_batch"] = per_batch
    results["torch_best_batch"] = best
    return model, best


def _interleaved_times(
    s: _Setup, programs: dict, model: TorchBaseline | None, best: dict
) -> dict[str, list[float]]:
    """Seconds of every measurement, repeated `reps` times in interleaved order."""
    times: dict[str, list[float]] = {}

    def record(name, seconds):
        times.setdefault(name, []).append(seconds)

    for _ in range(s.spec.reps):
        record("emojax_sweep", timed(programs["sweep"]))
        record("emojax_generate", timed(programs["generate"]))
        if model is not None:
            t0 = time.perf_counter()
            model.refusal_scores(s.tokens, s.mask, s.steer, s.refusal_ids, best["prefill"])
            record("torch_sweep", time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.generate(s.tokens, s.mask, s.steer, s.spec.new_tokens, best["generate"])
            record("torch_generate", time.perf_counter() - t0)
        for _ in range(5):  # overheads: short, so more repetitions, interleaved
            for name in ("forward", "forward_iv", "forward_capture", "matmul", "matmul_vocab"):
                record(name, timed(programs[name]))
    return times


def _summary(s: _Setup, times: dict[str, list[float]], results: dict) -> None:
    """Adds medians, speedups, overheads, FLOP/s and MFU to `results`."""
    spec, config = s.spec, s.config
    n, t, num_cond = spec.num_prompts, spec.prompt_len, s.steer.shape[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    results["median_s"] = med
    results["best_s"] = {k: min(v) for k, v in times.items()}
    results["conditions_per_s_emojax_sweep"] = num_cond / med["emojax_sweep"]
    if "torch_sweep" in times:
        results["sweep_speedup_vs_torch_hooks"] = med["torch_sweep"] / med["emojax_sweep"]
        results["generation_speedup_vs_torch_hooks"] = (
            med["torch_generate"] / med["emojax_generate"]
        )
        best_s = results["best_s"]  # best-of-reps: less sensitive to a shared, busy CPU
        results["sweep_speedup_best_of_reps"] = best_s["torch_sweep"] / best_s["emojax_sweep"]
        results["generation_speedup_best_of_reps"] = (
            best_s["torch_generate"] / best_s["emojax_generate"]
        )
    # Overheads: the median over interleaved triples of (variant / plain) run back to back,
    # so that load changes on a shared CPU cancel; ratios of medians and of the fastest runs
    # are kept for comparison.
    paired = lambda name: statistics.median(
        a / b for a, b in zip(times[name], times["forward"], strict=True)
    )
    results["intervention_overhead"] = paired("forward_iv") - 1.0
    results["capture_overhead"] = paired("forward_capture") - 1.0
    for what, name in (("intervention", "forward_iv"), ("capture", "forward_capture")):
        results[f"{what}_overhead_of_medians"] = med[name] / med["forward"] - 1.0
        results[f"{what}_overhead_of_fastest"] = (
            results["best_s"][name] / results["best_s"]["forward"] - 1.0
        )
    matmul_flops = max(
        2 * n * t * config.d_model * config.d_ff / min(times["matmul"]),
        2 * n * t * config.d_model * config.vocab_size / min(times["matmul_vocab"]),
    )
    fwd_flops = forward_flops(config, n, t, t) / min(times["forward"])
    results["matmul_gflops"] = matmul_flops / 1e9
    results["forward_gflops"] = fwd_flops / 1e9
    results["roofline_fraction"] = fwd_flops / matmul_flops
    if spec.peak_tflops > 0:
        results["mfu"] = fwd_flops / (spec.peak_tflops * 1e12)
        sweep_flops = forward_flops(config, n * num_cond, t, 0) * (
            (config.num_layers - s.layer) / config.num_layers
        )
        results["sweep_mfu"] = sweep_flops / med["emojax_sweep"] / (spec.peak_tflops * 1e12)


def run_steering_bench(spec: SteeringBenchSpec | None = None) -> dict:
    """Runs the steering benchmark; the JSON-ready result of scripts/bench.py.

    Args:
      spec: sizes and switches (None: the defaults, a ~58M-parameter Llama).

    Returns:
      {"device", "dtype", "num_params", "layer", "num_prompts", "prompt_len",
       "num_conditions", "new_tokens", "emojax_compile_s": {program: s}, "median_s" and
       "best_s": {measurement: s}, "conditions_per_s_emojax_sweep", "intervention_overhead",
       "capture_overhead" (paired) and their "_of_medians" / "_of_fastest" variants,
       "matmul_gflops", "forward_gflops", "roofline_fraction"}; with the torch baseline also
      "torch_device", "torch_threads", "max_refusal_score_diff", "generated_token_agreement",
      "torch_{prefill,generate}_s_by_batch", "torch_best_batch", the sweep / generation
      speedups (of medians and best of reps); "mfu" and "sweep_mfu" with `peak_tflops`;
      "probes" with `probes`.
    """
    spec = (spec or SteeringBenchSpec()).resolved()
    s = _setup(spec)
    results: dict = {
        "device": str(jax.devices()[0]),
        "dtype": spec.dtype,
        "num_params": s.config.num_params,
        "layer": s.layer,
        "num_prompts": spec.num_prompts,
        "prompt_len": spec.prompt_len,
        "num_conditions": s.steer.shape[0],
        "new_tokens": spec.new_tokens,
    }
    programs = _emojax_programs(s)
    compile_s = {}
    for name in ("sweep", "generate", "forward", "forward_iv", "forward_capture"):
        compile_s[name] = timed(programs[name])
    timed(programs["matmul"])
    timed(programs["matmul_vocab"])
    results["emojax_compile_s"] = compile_s
    model, best = _torch_baseline(s, programs, results) if spec.torch else (None, {})
    _summary(s, _interleaved_times(s, programs, model, best), results)
    if spec.probes:
        try:
            from emojax.probes import bench_probes
        except ImportError:
            results["probes"] = None
        else:
            results["probes"] = bench_probes(**({"num_prompts": 100} if spec.quick else {}))
    return results


def format_steering_table(r: dict) -> str:
    """The human-readable table of a `run_steering_bench` result."""
    med = r["median_s"]
    lines = [
        f"emojax bench: {r['num_params'] / 1e6:.1f}M-param Llama, {r['dtype']}, {r['device']}, "
        f"N={r['num_prompts']} prompts x T={r['prompt_len']}, C={r['num_conditions']} "
        f"conditions, layer {r['layer']}, {r['new_tokens']} new tokens"
    ]
    rows = [("measurement", "emojax", "torch+hooks", "ratio")]
    if "torch_sweep" in med:
        rows.append(
            (
                "sweep prefill readout (s)",
                f"{med['emojax_sweep']:.3f}",
                f"{med['torch_sweep']:.3f} (batch {r['torch_best_batch']['prefill']})",
                f"{r['sweep_speedup_vs_torch_hooks']:.2f}x",
            )
        )
        rows.append(
            (
                "steered generation (s)",
                f"{med['emojax_generate']:.3f}",
                f"{med['torch_generate']:.3f} (batch {r['torch_best_batch']['generate']})",
                f"{r['generation_speedup_vs_torch_hooks']:.2f}x",
            )
        )
    rows += [
        ("forward, no intervention (s)", f"{med['forward']:.4f}", "", ""),
        (
            "forward + intervention (s)",
            f"{med['forward_iv']:.4f}",
            "",
            f"{100 * r['intervention_overhead']:+.1f} %",
        ),
        (
            "forward + capture all layers (s)",
            f"{med['forward_capture']:.4f}",
            "",
            f"{100 * r['capture_overhead']:+.1f} %",
        ),
        ("forward GFLOP/s", f"{r['forward_gflops']:.1f}", "", ""),
        (
            "f32 matmul GFLOP/s (roofline)",
            f"{r['matmul_gflops']:.1f}",
            "",
            f"{100 * r['roofline_fraction']:.0f} % of roofline",
        ),
    ]
    if r.get("probes"):
        p = r["probes"]
        rows.append(
            (
                f"probes ({p['num_probes']} fits)",
                f"{p['jax_s']:.3f}",
                f"{p['sklearn_s']:.3f} (sklearn)",
                f"{p['speedup']:.2f}x",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        lines.append("  ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)))
    if "max_refusal_score_diff" in r:
        lines.append(
            f"agreement: max |refusal score diff| {r['max_refusal_score_diff']:.2e}, "
            f"generated tokens equal {100 * r['generated_token_agreement']:.1f} %"
        )
    return "\n".join(lines)
