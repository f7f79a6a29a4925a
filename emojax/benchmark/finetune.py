"""The fine-tuning benchmark: the safety tune step against this machine's f32 matmul roofline.

On a SmolLM2-135M-shaped Llama with random weights (`emojax.init_params`; nothing is
downloaded), at the safety recipe's shapes (B 8 sequences of T 112 tokens, responses of up to
48 tokens), one process measures, in interleaved repetitions:

* the roofline: one large f32 `jnp.dot` ([n, n] x [n, n]), in FLOP/s;
* the tune step (`emojax.tune`'s jitted step: `training_nll`, AdamW, donated state);
* the previous formulation of the same step (`previous_step`: `forward` over every position
  with scanned layers, then `response_nll`; no donation), which learns the same thing;
* with `breakdown`, the tuned loss alone (forward) and with its gradients (forward +
  backward), so that the optimizer's share is the step minus the latter.

FLOPs count 2 per multiply-add of the matmuls (`measure.forward_flops`), the backward pass as
twice the forward; each formulation is charged what it executes (the previous one projects
every position onto the vocabulary, the tuned one P positions: `tuned_forward_flops`).
Fractions of the roofline are medians over repetitions of (step FLOP/s / roofline FLOP/s)
measured back to back, so that a shared CPU's load changes cancel; per-call process CPU
seconds are reported beside the wall times (on a busy machine they show the work done, not
the waiting).

Dimension letters: B batch, T sequence, P response positions, D model, L layers, F MLP width,
V vocabulary.
"""

from __future__ import annotations

import functools
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import emojax
from emojax import tune
from emojax.benchmark.forward import llama_config
from emojax.benchmark.measure import forward_flops

# SmolLM2-135M (emojax.models: 30 layers, d_model 576, 9 heads / 3 KV heads, vocab 49152,
# tied embeddings) as a config.json dictionary.
SMOLLM2_135M = llama_config(
    576, 30, 9, 1536, 49152,
    num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
)  # fmt: skip


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def synthetic_batch(
    config: emojax.ModelConfig, batch: int, seq: int, response_tokens: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens int32 [B, T] and a loss mask [B, T]: row b ends in a response of between
    response_tokens / 4 and response_tokens tokens (evenly spread over the rows)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, config.vocab_size, (batch, seq)).astype(np.int32)
    lengths = np.linspace(max(1, response_tokens // 4), response_tokens, batch).round()
    mask = np.zeros((batch, seq), np.float32)
    for row, n in enumerate(lengths.astype(int)):
        mask[row, seq - n :] = 1.0
    return tokens, mask


def tuned_forward_flops(config: emojax.ModelConfig, rows: int, t: int, positions: int) -> float:
    """Matmul FLOPs of `tune.training_nll`'s forward: `forward_flops` at P logit positions,
    less the last layer's queries, attention, output projection and MLP at the other T - P."""
    c, skipped = config, max(t - positions, 0)
    per_token = c.d_model * c.head_dim * 2 * c.num_heads + 3 * c.d_model * c.d_ff
    attn = 2 * c.num_heads * c.head_dim * t
    return forward_flops(config, rows, t, positions) - 2 * rows * skipped * (per_token + attn)


def previous_step(config: emojax.ModelConfig, tx: optax.GradientTransformation):
    """The tune step as it was: `response_nll` (scanned `forward` over all T positions)."""

    @jax.jit
    def step(params, opt_state, tokens, loss_mask):
        loss, grads = jax.value_and_grad(tune.response_nll)(params, config, tokens, loss_mask)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def run_finetune_bench(
    *,
    batch: int = 8,
    seq: int = 112,
    response_tokens: int = 48,
    num_layers: int = 30,
    matmul_size: int = 4096,
    repeats: int = 5,
    previous: bool = True,
    breakdown: bool = True,
    model: dict | None = None,
) -> dict:
    """Times the tune step, its previous formulation and the f32 matmul roofline in one run.

    Args:
      batch: B sequences per step (the safety recipe: 8).
      seq: T tokens per sequence (the recipe's max_len: 112).
      response_tokens: the longest response (the recipe's answer_tokens: 48); sets P.
      num_layers: L (30 for SmolLM2-135M; fewer for a quick run).
      matmul_size: n of the roofline's [n, n] x [n, n] matmul.
      repeats: interleaved repetitions of every measurement (after one warm-up each).
      previous: also time the previous formulation of the step.
      breakdown: also time the tuned loss (forward) and its gradients (forward + backward).
      model: a config.json dictionary in place of `SMOLLM2_135M` (num_layers still applies).

    Returns:
      A JSON-ready dict: "device", "cpu_model", "cpu_count", "load_avg_1m" (before, after),
      "num_params", "batch", "seq", "num_positions", "compilation_cache" (the persistent
      cache's directory or None), "roofline_gflops" (median), and per
      program ("tuned", "previous", "tuned_forward", "tuned_forward_backward") its
      "compile_s", "step_s_median", "step_s_min", "cpu_s_median", "gflop" (per call),
      "gflops" (median rate) and, for the steps, "roofline_fraction" (paired median) and
      "roofline_fraction_cpu" (the same with process CPU seconds, per core); plus
      "speedup_vs_previous" (paired median of previous / tuned step time) and "loss_diff"
      (|tuned - previous| loss of the first step, same weights and batch).
    """
    model = {**(SMOLLM2_135M if model is None else model), "num_hidden_layers": num_layers}
    config = emojax.ModelConfig.from_hf_dict(model)
    params = emojax.init_params(config, jax.random.PRNGKey(0))
    tokens_np, mask_np = synthetic_batch(config, batch, seq, response_tokens)
    tokens, mask = jnp.asarray(tokens_np), jnp.asarray(mask_np)
    num_positions = tune.num_response_positions(mask_np)
    spec = tune.TuneSpec(batch_size=batch)
    tx, tuned_step = tune._step_fn(config, spec, num_positions)
    t = seq - 1
    fwd_tuned = tuned_forward_flops(config, batch, t, num_positions)
    fwd_previous = forward_flops(config, batch, t, t)
    results: dict = {
        "device": str(jax.devices()[0]),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": [os.getloadavg()[0]],
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "batch": batch,
        "seq": seq,
        "num_layers": num_layers,
        "num_positions": num_positions,
        "matmul_size": matmul_size,
        "repeats": repeats,
        # compile_s is a cache read where the persistent cache holds the program already
        "compilation_cache": jax.config.jax_compilation_cache_dir,
    }

    # Each program: (compiled callable of no arguments, FLOPs per call). The steps thread
    # their state through (the tuned one donates it), as `tune.tune` does.
    state = {"tuned": (jax.tree.map(jnp.copy, params), tx.init(params))}
    programs: dict[str, tuple] = {}

    def compile_step(name, step, flops):
        t0 = time.perf_counter()
        compiled = step.lower(*state[name], tokens, mask).compile()
        results[name] = {"compile_s": time.perf_counter() - t0}

        def call():
            p, o, loss = compiled(*state[name], tokens, mask)
            state[name] = (p, o)
            return loss

        programs[name] = (call, flops)

    compile_step("tuned", tuned_step, 3 * fwd_tuned)
    first = {"tuned": float(programs["tuned"][0]())}
    if previous:
        state["previous"] = (params, tx.init(params))
        compile_step("previous", previous_step(config, tx), 3 * fwd_previous)
        first["previous"] = float(programs["previous"][0]())
        results["loss_diff"] = abs(first["tuned"] - first["previous"])
    if breakdown:
        loss = functools.partial(tune.training_nll, num_positions=num_positions)
        for name, fn, flops in (
            ("tuned_forward", jax.jit(loss, static_argnums=1), fwd_tuned),
            ("tuned_forward_backward", jax.jit(jax.value_and_grad(loss), static_argnums=1),
             3 * fwd_tuned),
        ):  # fmt: skip
            t0 = time.perf_counter()
            compiled = fn.lower(params, config, tokens, mask).compile()
            results[name] = {"compile_s": time.perf_counter() - t0}
            programs[name] = (functools.partial(compiled, params, tokens, mask), flops)
    a = jax.random.normal(jax.random.PRNGKey(1), (matmul_size, matmul_size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(2), (matmul_size, matmul_size), jnp.float32)
    matmul = jax.jit(jnp.dot).lower(a, b).compile()
    programs["roofline"] = (functools.partial(matmul, a, b), 2 * matmul_size**3)

    for fn, _ in programs.values():  # warm-up
        jax.block_until_ready(fn())
    wall: dict[str, list[float]] = {name: [] for name in programs}
    cpu: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(repeats):
        for name, (fn, _) in programs.items():
            c0, t0 = _cpu_seconds(), time.perf_counter()
            jax.block_until_ready(fn())
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu_seconds() - c0)
    results["load_avg_1m"].append(os.getloadavg()[0])

    roof_flops = programs["roofline"][1]
    roof_rate = [roof_flops / s for s in wall["roofline"]]
    roof_cpu_rate = [roof_flops / s for s in cpu["roofline"]]  # per core-second
    results["roofline_gflops"] = statistics.median(roof_rate) / 1e9
    results["roofline_gflops_per_cpu_s"] = statistics.median(roof_cpu_rate) / 1e9
    for name, (_, flops) in programs.items():
        if name == "roofline":
            continue
        r = results[name]
        r["step_s_median"] = statistics.median(wall[name])
        r["step_s_min"] = min(wall[name])
        r["cpu_s_median"] = statistics.median(cpu[name])
        r["gflop"] = flops / 1e9
        r["gflops"] = flops / r["step_s_median"] / 1e9
        r["roofline_fraction"] = statistics.median(
            flops / s / roof for s, roof in zip(wall[name], roof_rate, strict=True)
        )
        r["roofline_fraction_cpu"] = statistics.median(
            flops / s / roof for s, roof in zip(cpu[name], roof_cpu_rate, strict=True)
        )
    if previous:
        results["speedup_vs_previous"] = statistics.median(
            p / t for p, t in zip(wall["previous"], wall["tuned"], strict=True)
        )
    return results


def format_finetune_bench(results: dict) -> str:
    """The human-readable lines of a `run_finetune_bench` result."""
    r = results
    lines = [
        f"device {r['device']} ({r['cpu_model']}, {r['cpu_count']} CPUs), load "
        f"{r['load_avg_1m'][0]:.1f} -> {r['load_avg_1m'][-1]:.1f}",
        f"params {r['num_params'] / 1e6:.1f}M, {r['num_layers']} layers, batch {r['batch']} x "
        f"seq {r['seq']}, loss at P={r['num_positions']} response positions, float32",
        f"roofline: f32 matmul {r['matmul_size']}^3 {r['roofline_gflops']:.1f} GFLOP/s "
        f"({r['roofline_gflops_per_cpu_s']:.1f} per CPU-second)",
    ]
    for name in ("previous", "tuned", "tuned_forward", "tuned_forward_backward"):
        if name not in r:
            continue
        v = r[name]
        lines.append(
            f"{name:>23}: {v['step_s_median']:.2f} s (min {v['step_s_min']:.2f}, "
            f"{v['cpu_s_median']:.1f} CPU-s), {v['gflop']:.0f} GFLOP, {v['gflops']:.1f} GFLOP/s "
            f"= {100 * v['roofline_fraction']:.0f} % of roofline "
            f"({100 * v['roofline_fraction_cpu']:.0f} % per CPU-s); compile {v['compile_s']:.1f} s"
        )
    if r.get("compilation_cache"):
        lines.append(f"compile times include reads from {r['compilation_cache']}")
    if "speedup_vs_previous" in r:
        lines.append(
            f"tuned step {r['speedup_vs_previous']:.2f}x faster than the previous formulation "
            f"(first-step loss difference {r['loss_diff']:.1e})"
        )
    return "\n".join(lines)
