"""A config's run planned on a TPU or GPU mesh before any weights exist: scripts/plan.py's report.

Per-device memory of the stages (params, activations, extraction capture, KV cache), the
sweep's FLOPs, time and on-demand cost, at the sweep sizes of an `ml_collections` config
(`sweep`, `data`, `mesh`, `breakpoint` sections). Nothing is allocated: parameter layouts
come from `jax.eval_shape` over the sharded initialiser on a device-free `AbstractMesh`, and
the planner's own byte count (`emojax.sharding.plan`) is checked against it.

Dimension letters: B sequences per forward, T prompt tokens, L layers, D model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from emojax import sharding as sh
from emojax.parallel.plan import CHIP_SPECS

GiB = 2**30


def sweep_sizes(cfg, num_layers: int, prefix_layer: float = -1) -> tuple[int, int, list[int]]:
    """(prompts, conditions per injection layer, injection layers) of the config's sweep.

    Args:
      cfg: the run config.
      num_layers: L of the model (depth fractions in [0, 1) become layer indices).
      prefix_layer: one injection layer (int or depth fraction; < 0 = `cfg.sweep.layers`).
    """
    s = cfg.sweep
    prompts = sum(s.prompts_per_kind.values()) + s.neutral_prompts
    concepts = len(cfg.data.emotions) + len(cfg.data.controls)
    vectors = concepts + s.num_random
    joint = len(s.joint_controls) * len(s.joint_emotions) * len(s.joint_coefs) ** 2
    conditions = vectors * len(s.coefs) + joint
    layers = list(s.layers) if prefix_layer < 0 else [prefix_layer]
    layers = [int(x * num_layers) if x < 1 else int(x) for x in layers]
    return prompts, conditions, layers


def config_mesh_shape(cfg, devices: int = 0, mesh: str = "") -> tuple[int, int]:
    """(data, model) axis sizes: `mesh` ('data,model') or the config's mesh section.

    Args:
      cfg: the run config.
      devices: chips in the mesh (0 = data * model, or every local device when one is -1).
      mesh: 'data,model', overriding the config's mesh section when given.
    """
    if mesh:
        data, model = (int(x) for x in mesh.split(","))
    else:
        data, model = int(cfg.mesh.data), int(cfg.mesh.model)
    devices = devices or (data * model if data > 0 and model > 0 else jax.device_count())
    return sh.mesh_shape(devices, data, model)


def plannable_models(cfg, model: str = "", log: Callable[[str], None] = print) -> list[str]:
    """The model to plan: `model`, else the first of `cfg.breakpoint.models` with a config.

    Fine-tunes of one family share shapes, so one model is planned. Entries that are neither
    a checkpoint, a GGUF file, a registered model nor a known architecture
    (`emojax.sharding.reference_config`) are skipped with a `log` line.
    """
    if model:
        return [model]
    out = []
    for m in cfg.breakpoint.models:
        try:
            sh.reference_config(m)
        except (ValueError, OSError):
            log(f"(skipping {m!r}: not a checkpoint, GGUF file, registered model or known "
                "architecture)")  # fmt: skip
            continue
        out.append(m)
    return out[:1]  # fine-tunes of one family share shapes: plan the first


def plan_report(
    name: str,
    cfg,
    data: int,
    model: int,
    *,
    chip: str = "v5p",
    mfu: float = 0.4,
    seq_len: int = 256,
    batch: int = 0,
    prefix_layer: float = -1,
) -> str:
    """The text plan of model `name` under `cfg` on a (data, model) mesh of `chip`s.

    Args:
      name: a checkpoint dir or known model name (`emojax.sharding.reference_config`).
      cfg: the run config (dtype, sweep sizes, mesh rules).
      data, model: the mesh's axis sizes.
      chip: a key of `emojax.parallel.plan.CHIP_SPECS`: a TPU or GPU (memory, FLOP/s,
        price where one is listed).
      mfu: assumed model-FLOPs utilisation for the time estimate.
      seq_len: prompt tokens T (padded bucket).
      batch: sequences per forward call (0 = 8 per data shard).
      prefix_layer: one injection layer (int or depth fraction; < 0 = `cfg.sweep.layers`).

    Raises:
      ValueError: an unknown chip (the message lists the known ones).
      RuntimeError: the planner's parameter bytes differ from `jax.eval_shape`'s.
    """
    if chip not in CHIP_SPECS:
        raise ValueError(f"unknown chip {chip!r}: known are {', '.join(CHIP_SPECS)}")
    mcfg = sh.reference_config(name)
    dtype = jnp.dtype(cfg.dtype)
    mesh = sh.abstract_mesh(data, model)
    rules = sh.rules_from_config(cfg.mesh.get("rules"))
    prompts, conditions, layers = sweep_sizes(cfg, mcfg.num_layers, prefix_layer)
    batch = batch or 8 * data
    kw = dict(dtype=dtype, batch=batch, seq_len=seq_len, prompts=prompts,
              conditions=conditions, prefix_layer=layers[0], rules=rules)  # fmt: skip
    sweep = sh.plan(mcfg, mesh, capture=False, **kw)
    extract = sh.plan(mcfg, mesh, capture=True, **kw)
    gen = sh.plan(mcfg, mesh, capture=False, max_new_tokens=cfg.sweep.max_new_tokens, **kw)

    abstract = sh.abstract_sharded_params(mcfg, mesh, dtype, rules)
    checked = sh.per_device_bytes(abstract)
    if checked != sweep.param_bytes:
        raise RuntimeError(f"planner {sweep.param_bytes} != eval_shape {checked} bytes/device")

    spec = CHIP_SPECS[chip]
    devices = data * model
    lines = [
        "",
        f"== {name}: {mcfg.num_params / 1e9:.2f}B params, {cfg.dtype}, "
        f"mesh (data, model) = {(data, model)} on {devices} x {chip} "
        f"({spec['hbm'] / GiB:.0f} GiB, {spec['flops'] / 1e12:.0f} TFLOP/s bf16 peak each) ==",
        f"param bytes per device verified against jax.eval_shape: {checked / GiB:.2f} GiB",
    ]
    if sweep.replicated_dims:
        lines.append(f"note: replicated because {model} does not divide them: "
                     f"{sweep.replicated_dims}")  # fmt: skip
    b_dev = math.ceil(batch / data)
    rows = [
        ("params", sweep.param_bytes),
        (f"activations (B={b_dev}/device, T={seq_len})", sweep.activation_bytes),
        ("extraction capture resid[L+1,B,T,D] f32", extract.capture_bytes),
        (f"KV cache (+{cfg.sweep.max_new_tokens} generated tokens)", gen.kv_cache_bytes),
    ]
    lines += [f"  {label:<46} {n / GiB:9.2f} GiB" for label, n in rows]
    peak = max(extract.total_bytes, gen.total_bytes)
    fits = "fits" if peak <= 0.9 * spec["hbm"] else "DOES NOT FIT"
    lines.append(f"  {'peak (extraction or generation)':<46} {peak / GiB:9.2f} GiB of "
                 f"{spec['hbm'] / GiB:.0f} GiB per chip: {fits}")  # fmt: skip

    sizes = dict(prompts=prompts, seq_len=seq_len, conditions=conditions)
    prefill = sum(sh.sweep_flops(mcfg, prefix_layer=layer, **sizes) for layer in layers)
    no_reuse = len(layers) * sh.sweep_flops(mcfg, prefix_layer=0, **sizes)
    new_tokens = len(layers) * conditions * prompts * cfg.sweep.max_new_tokens
    generation = 2 * mcfg.num_params * new_tokens  # upper bound: every condition generates
    total = prefill + generation
    seconds = total / (devices * spec["flops"] * mfu)
    price = spec["usd_hour"]
    cost = f"  ~ ${seconds / 3600 * devices * price:.2f} on demand" if price else ""
    lines += [
        f"sweep: {prompts} prompts x {conditions} conditions at layers {layers}, "
        f"T={seq_len}, +{cfg.sweep.max_new_tokens} generated tokens",
        f"  prefill FLOPs (2*N*tokens, prefix reuse) {prefill:.3e}  (without reuse "
        f"{no_reuse:.3e}, x{no_reuse / prefill:.2f})",
        f"  generation FLOPs (2*N*new tokens)      {generation:.3e}",
        f"  time at {mfu:.0%} MFU of the bf16 peak      {_duration(seconds):>13}{cost}",
        "other meshes on these chips (params + peak activations per device):",
    ]
    if dtype != jnp.bfloat16:
        lines.insert(-1, f"  (the time uses the bf16 peak: {cfg.dtype} matmuls may run slower)")
    if mcfg.num_params < 1e9:
        lines.insert(-1, "  (a FLOP bound: a model this small is bound by memory traffic and "
                         f"kernel launches, far below {mfu:.0%} MFU)")  # fmt: skip
    for m in (1, 2, 4, 8, 16):
        if devices % m or m > devices:
            continue
        p = sh.plan(mcfg, sh.abstract_mesh(devices // m, m), capture=True, **kw)
        lines.append(
            f"  ({devices // m}, {m}): {p.total_bytes / GiB:8.2f} GiB"
            + (f"  (replicated: {', '.join(p.replicated_dims)})" if p.replicated_dims else "")
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """`seconds` in the unit a reader compares: s below 2 min, min below 2 h, else h."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def plan_config(
    cfg,
    *,
    model: str = "",
    devices: int = 0,
    mesh: str = "",
    chip: str = "v5p",
    mfu: float = 0.4,
    seq_len: int = 256,
    batch: int = 0,
    prefix_layer: float = -1,
    log: Callable[[str], None] = print,
) -> list[str]:
    """The `plan_report` of each model to plan (`plannable_models`) on the config's mesh.

    Args are those of `config_mesh_shape`, `plannable_models` and `plan_report`. Returns an
    empty list when no model can be planned.
    """
    data, mesh_model = config_mesh_shape(cfg, devices, mesh)
    return [
        plan_report(name, cfg, data, mesh_model, chip=chip, mfu=mfu, seq_len=seq_len,
                    batch=batch, prefix_layer=prefix_layer)
        for name in plannable_models(cfg, model, log)
    ]  # fmt: skip
