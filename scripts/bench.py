r"""Benchmark: emojax steering sweeps against the PyTorch forward-hook baseline.

On one ~50M-parameter Llama (d_model 512, 8 layers, 8 heads, d_ff 1376, vocab 32000; random
weights from `emojax.init_params`, exported with `emojax.save_pretrained` so transformers'
LlamaForCausalLM loads the very same weights), with the same prompts and dtype, it times:

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

Examples:
  python scripts/bench.py                 # table
  python scripts/bench.py --json          # one JSON object
  python scripts/bench.py --quick --json  # fast smoke
  python scripts/bench.py --probes        # add the probes benchmark row
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import emojax
from emojax import readouts as ro
from emojax import sweep
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


def bench_config() -> emojax.ModelConfig:
    return emojax.ModelConfig.from_hf_dict(
        {
            "model_type": "llama",
            "vocab_size": FLAGS.vocab,
            "hidden_size": FLAGS.d_model,
            "intermediate_size": FLAGS.d_ff,
            "num_hidden_layers": FLAGS.num_layers,
            "num_attention_heads": FLAGS.num_heads,
            "num_key_value_heads": FLAGS.num_heads,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        }
    )


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def forward_flops(config: emojax.ModelConfig, rows: int, t: int, logit_positions: int) -> float:
    """Matmul FLOPs of a forward pass (2 per multiply-add), attention scores included."""
    c = config
    per_token = c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    per_token += 3 * c.d_model * c.d_ff
    attn = 2 * c.num_heads * c.head_dim * t  # q.k and p.v per query (full square)
    layers = 2 * rows * t * c.num_layers * (per_token + attn)
    return layers + 2 * rows * logit_positions * c.d_model * c.vocab_size


def make_prompts(config, n, t, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, config.vocab_size, size=(n, t)).astype(np.int32)
    mask = np.ones((n, t), np.int32)
    for i in range(n):  # left padding: lengths t-7..t
        pad = i % 8
        tokens[i, :pad] = 0
        mask[i, :pad] = 0
    return tokens, mask


class TorchBaseline:
    """transformers LlamaForCausalLM + a forward-pre-hook that adds the steering vector."""

    def __init__(self, path, layer, dtype, device="cpu"):
        import torch
        from transformers import LlamaForCausalLM

        self.torch = torch
        self.device = device
        self.model = LlamaForCausalLM.from_pretrained(path).eval().to(device=device, dtype=dtype)
        self.layer = layer
        self.vector = None

        def hook(module, args, kwargs):
            if self.vector is None:
                return None
            if args:
                return (args[0] + self.vector,) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = kwargs["hidden_states"] + self.vector
            return args, kwargs

        self.model.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)

    def set_vector(self, v):
        if v is not None:
            v = self.torch.as_tensor(np.asarray(v)).to(device=self.device, dtype=self.model.dtype)
        self.vector = v

    def refusal_scores(self, tokens, mask, steer, refusal_ids, batch) -> np.ndarray:
        """[C, N] refusal scores: one forward per condition and prompt batch."""
        torch = self.torch
        tk = torch.as_tensor(tokens).long().to(self.device)
        mk = torch.as_tensor(mask).long().to(self.device)
        pos = torch.clamp(mk.cumsum(-1) - 1, min=0)
        ids = torch.as_tensor(refusal_ids).long().to(self.device)
        out = []
        with torch.inference_mode():
            for v in steer:
                self.set_vector(v)
                rows = []
                for i in range(0, tk.shape[0], batch):
                    logits = (
                        self.model(
                            input_ids=tk[i : i + batch],
                            attention_mask=mk[i : i + batch],
                            position_ids=pos[i : i + batch],
                        )
                        .logits[:, -1]
                        .float()
                    )
                    lse_r = torch.logsumexp(logits[:, ids], -1)
                    rest = logits.clone()
                    rest[:, ids] = -torch.inf
                    rows.append((lse_r - torch.logsumexp(rest, -1)).cpu().numpy())
                out.append(np.concatenate(rows))
        self.set_vector(None)
        return np.stack(out)

    def generate(self, tokens, mask, steer, new_tokens, batch) -> np.ndarray:
        """[C, N, W] greedy tokens: HF generate with the hook, per condition and batch."""
        torch = self.torch
        tk = torch.as_tensor(tokens).long().to(self.device)
        mk = torch.as_tensor(mask).long().to(self.device)
        out = []
        with torch.inference_mode():
            for v in steer:
                self.set_vector(v)
                rows = []
                for i in range(0, tk.shape[0], batch):
                    g = self.model.generate(
                        input_ids=tk[i : i + batch],
                        attention_mask=mk[i : i + batch],
                        max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens,
                        do_sample=False,
                        pad_token_id=0,
                    )
                    rows.append(g[:, tk.shape[1] :].cpu().numpy())
                out.append(np.concatenate(rows))
        self.set_vector(None)
        return np.stack(out)


def main(argv):
    del argv
    if FLAGS.quick:
        FLAGS.num_prompts, FLAGS.prompt_len, FLAGS.num_vectors, FLAGS.num_coefs = 4, 16, 1, 2
        FLAGS.new_tokens, FLAGS.reps = 4, 1
    dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
    config = bench_config()
    layer = FLAGS.layer % config.num_layers if FLAGS.layer >= 0 else config.num_layers // 2
    params = jax.jit(emojax.init_params, static_argnums=(0, 2))(
        config, jax.random.PRNGKey(0), dtype
    )
    n, t, w, reps = FLAGS.num_prompts, FLAGS.prompt_len, FLAGS.new_tokens, FLAGS.reps
    tokens, mask = make_prompts(config, n, t)
    rng = np.random.default_rng(1)
    units = rng.standard_normal((FLAGS.num_vectors, config.d_model)).astype(np.float32)
    units /= np.linalg.norm(units, axis=-1, keepdims=True)
    coefs = np.linspace(-2.0, 2.0, FLAGS.num_coefs)
    # Random init residual norms are ~1 at layer l; a coefficient of 2 visibly steers.
    steer = np.concatenate([c * units for c in coefs])  # [C, D]
    num_cond = steer.shape[0]
    refusal_ids = np.arange(3, 11, dtype=np.int32)
    refusal = ro.refusal_mask(refusal_ids, config.vocab_size)
    jt, jm, js = jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(steer)
    results: dict = {
        "device": str(jax.devices()[0]),
        "dtype": FLAGS.dtype,
        "num_params": config.num_params,
        "layer": layer,
        "num_prompts": n,
        "prompt_len": t,
        "num_conditions": num_cond,
        "new_tokens": w,
    }

    # --- emojax programs --------------------------------------------------------------------
    mem_rows = sweep.rows_for_budget(sweep.prefill_row_bytes(config, t, layer, 1, False), 2048)
    chunk = max(1, min(num_cond, mem_rows // n))

    def emojax_sweep():
        resid = sweep._base_pass(params, config, jt, jm, refusal)[0][layer]
        outs = []
        for i in range(0, num_cond, chunk):
            s = js[i : i + chunk]
            if s.shape[0] < chunk:
                s = jnp.concatenate([s, jnp.zeros((chunk - s.shape[0], s.shape[1]), s.dtype)])
            outs.append(
                sweep.steered_eval(
                    params,
                    config,
                    jt,
                    jm,
                    resid,
                    s,
                    refusal,
                    jnp.zeros((1, config.d_model)),
                    start_layer=layer,
                    readout=None,
                )[0]
            )
        return jnp.concatenate(outs)[:num_cond]

    def emojax_generate():
        return sweep.steered_generate(params, config, jt, jm, js, layer=layer, max_new_tokens=w)

    iv = emojax.Intervention.add(config, layer, jnp.asarray(units[0]))
    fwd = jax.jit(emojax.forward, static_argnames=("config", "capture"))
    fwd_plain = lambda: fwd(params, config, jt, attention_mask=jm, capture=False).logits
    fwd_iv = lambda: (
        fwd(params, config, jt, attention_mask=jm, intervention=iv, capture=False).logits
    )
    fwd_cap = lambda: fwd(params, config, jt, attention_mask=jm, capture=True)
    x = jnp.asarray(rng.standard_normal((n * t, config.d_model)), dtype)
    # The roofline: the faster of the model's two matmul shapes (MLP width, vocabulary).
    wmat = jnp.asarray(rng.standard_normal((config.d_model, config.d_ff)), dtype)
    wvoc = jnp.asarray(rng.standard_normal((config.d_model, config.vocab_size)), dtype)
    matmul = jax.jit(lambda a, b: a @ b)

    compile_s = {}
    for name, fn in [
        ("sweep", emojax_sweep),
        ("generate", emojax_generate),
        ("forward", fwd_plain),
        ("forward_iv", fwd_iv),
        ("forward_capture", fwd_cap),
    ]:
        compile_s[name] = timed(fn)
    timed(matmul, x, wmat)
    timed(matmul, x, wvoc)
    results["emojax_compile_s"] = compile_s

    # --- PyTorch baseline ---------------------------------------------------------------------
    times: dict[str, list[float]] = {}

    def record(name, seconds):
        times.setdefault(name, []).append(seconds)

    torch_model = None
    batches = [n] if FLAGS.quick else sorted({b for b in (4, n) if b <= n})
    if FLAGS.torch_batches:
        batches = sorted({min(int(b), n) for b in FLAGS.torch_batches})
    if FLAGS.torch:
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            emojax.save_pretrained(params, config, tmp)
            torch_dtype = torch.bfloat16 if FLAGS.dtype == "bfloat16" else torch.float32
            device = FLAGS.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
            torch_model = TorchBaseline(tmp, layer, torch_dtype, device)
            results["torch_device"] = device
        results["torch_threads"] = torch.get_num_threads()
        # Agreement (and warm-up) before timing.
        scores_t = torch_model.refusal_scores(tokens, mask, steer, refusal_ids, n)
        scores_j = np.asarray(emojax_sweep())
        results["max_refusal_score_diff"] = float(np.abs(scores_t - scores_j).max())
        gen_t = torch_model.generate(tokens, mask, steer[:2], w, n)
        gen_j = np.asarray(emojax_generate())[:2]
        results["generated_token_agreement"] = float((gen_t == gen_j).mean())
        # Best batch size of the baseline (one timing each, then the best is repeated).
        best = {}
        for kind in ("prefill", "generate"):
            per_batch = {}
            for b in batches:
                t0 = time.perf_counter()
                if kind == "prefill":
                    torch_model.refusal_scores(tokens, mask, steer, refusal_ids, b)
                else:
                    torch_model.generate(tokens, mask, steer, w, b)
                per_batch[b] = time.perf_counter() - t0
            best[kind] = min(per_batch, key=per_batch.get)
            results[f"torch_{kind}_s_by_batch"] = per_batch
        results["torch_best_batch"] = best

    # --- Interleaved repetitions --------------------------------------------------------------
    for _ in range(reps):
        record("emojax_sweep", timed(emojax_sweep))
        record("emojax_generate", timed(emojax_generate))
        if torch_model is not None:
            t0 = time.perf_counter()
            torch_model.refusal_scores(tokens, mask, steer, refusal_ids, best["prefill"])
            record("torch_sweep", time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch_model.generate(tokens, mask, steer, w, best["generate"])
            record("torch_generate", time.perf_counter() - t0)
        for _ in range(5):  # overheads: short, so more repetitions, interleaved
            record("forward", timed(fwd_plain))
            record("forward_iv", timed(fwd_iv))
            record("forward_capture", timed(fwd_cap))
            record("matmul", timed(matmul, x, wmat))
            record("matmul_vocab", timed(matmul, x, wvoc))

    med = {k: statistics.median(v) for k, v in times.items()}
    results["median_s"] = med
    results["best_s"] = {k: min(v) for k, v in times.items()}
    results["conditions_per_s_emojax_sweep"] = num_cond / med["emojax_sweep"]
    if torch_model is not None:
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
    if FLAGS.peak_tflops > 0:
        results["mfu"] = fwd_flops / (FLAGS.peak_tflops * 1e12)
        sweep_flops = forward_flops(config, n * num_cond, t, 0) * (
            (config.num_layers - layer) / config.num_layers
        )
        results["sweep_mfu"] = sweep_flops / med["emojax_sweep"] / (FLAGS.peak_tflops * 1e12)

    if FLAGS.probes:
        try:
            from emojax.probes import bench_probes
        except ImportError:
            results["probes"] = None
        else:
            results["probes"] = bench_probes(**({"num_prompts": 100} if FLAGS.quick else {}))

    if FLAGS.json:
        print(json.dumps(results, default=float))
        return
    print_table(results)


def print_table(r: dict) -> None:
    med = r["median_s"]
    print(
        f"emojax bench: {r['num_params'] / 1e6:.1f}M-param Llama, {r['dtype']}, {r['device']}, "
        f"N={r['num_prompts']} prompts x T={r['prompt_len']}, C={r['num_conditions']} "
        f"conditions, layer {r['layer']}, {r['new_tokens']} new tokens"
    )
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
        print("  ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)))
    if "max_refusal_score_diff" in r:
        print(
            f"agreement: max |refusal score diff| {r['max_refusal_score_diff']:.2e}, "
            f"generated tokens equal {100 * r['generated_token_agreement']:.1f} %"
        )


if __name__ == "__main__":
    run_main(main)
