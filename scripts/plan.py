"""Plans a run on a mesh: per-device memory (params, KV cache, activations) and sweep FLOPs.

Nothing is allocated: parameter layouts come from `jax.eval_shape` over the sharded
initialiser on a device-free `AbstractMesh`, and the planner's own byte count is checked
against it. Sweep sizes are read from the config's `sweep` section; the mesh from `mesh`.

Examples:
  python scripts/plan.py --config=configs/llama31_8b.py --devices=8 --chip=v5e
  python scripts/plan.py --config=configs/zoo.py --model=llama-3.1-70b --devices=32 \
      --mesh=4,8 --chip=v5p                                  # Llama-3.1-70B on a v5p-64
  python scripts/plan.py --config=configs/gemma2_2b.py --devices=4 --chip=v6e
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from emojax import sharding as sh
from emojax.workdir import run_main

_CONFIG = config_flags.DEFINE_config_file("config", "configs/zoo.py", lock_config=True)
_MODEL = flags.DEFINE_string(
    "model", "", "checkpoint dir or known model name ('' = the config's breakpoint.models)."
)
_DEVICES = flags.DEFINE_integer("devices", 0, "chips in the mesh (0 = mesh.data*mesh.model).")
_MESH = flags.DEFINE_string("mesh", "", "'data,model' (overrides the config's mesh section).")
_CHIP = flags.DEFINE_enum("chip", "v5p", list(sh.TPU_SPECS), "TPU generation (cost model).")
_MFU = flags.DEFINE_float("mfu", 0.4, "assumed model-FLOPs utilisation for time estimates.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 256, "prompt tokens T (padded bucket).")
_BATCH = flags.DEFINE_integer("batch", 0, "sequences per forward call (0 = 8 per data shard).")
_PREFIX = flags.DEFINE_float("prefix_layer", -1, "one injection layer (int or depth "
                             "fraction; -1 = the config's sweep.layers).")  # fmt: skip

GiB = 2**30


def _sweep_sizes(cfg, num_layers: int) -> tuple[int, int, list[int]]:
    """(prompts, conditions per injection layer, injection layers) of the config's sweep."""
    s = cfg.sweep
    prompts = sum(s.prompts_per_kind.values()) + s.neutral_prompts
    concepts = len(cfg.data.emotions) + len(cfg.data.controls)
    vectors = concepts + s.num_random
    joint = len(s.joint_controls) * len(s.joint_emotions) * len(s.joint_coefs) ** 2
    conditions = vectors * len(s.coefs) + joint
    layers = list(s.layers) if _PREFIX.value < 0 else [_PREFIX.value]
    layers = [int(x * num_layers) if x < 1 else int(x) for x in layers]
    return prompts, conditions, layers


def _mesh_shape(cfg) -> tuple[int, int]:
    if _MESH.value:
        data, model = (int(x) for x in _MESH.value.split(","))
    else:
        data, model = int(cfg.mesh.data), int(cfg.mesh.model)
    devices = _DEVICES.value or (data * model if data > 0 and model > 0 else jax.device_count())
    return sh.mesh_shape(devices, data, model)


def _models(cfg) -> list[str]:
    if _MODEL.value:
        return [_MODEL.value]
    out = []
    for m in cfg.breakpoint.models:
        try:
            sh.reference_config(m)
        except (ValueError, OSError):
            print(f"(skipping {m!r}: no config.json there and not a known architecture)")
            continue
        out.append(m)
    return out[:1]  # fine-tunes of one family share shapes: plan the first


def _report(name: str, cfg, data: int, model: int) -> None:
    mcfg = sh.reference_config(name)
    dtype = jnp.dtype(cfg.dtype)
    mesh = sh.abstract_mesh(data, model)
    rules = sh.rules_from_config(cfg.mesh.get("rules"))
    prompts, conditions, layers = _sweep_sizes(cfg, mcfg.num_layers)
    batch = _BATCH.value or 8 * data
    kw = dict(dtype=dtype, batch=batch, seq_len=_SEQ_LEN.value, prompts=prompts,
              conditions=conditions, prefix_layer=layers[0], rules=rules)  # fmt: skip
    sweep = sh.plan(mcfg, mesh, capture=False, **kw)
    extract = sh.plan(mcfg, mesh, capture=True, **kw)
    gen = sh.plan(mcfg, mesh, capture=False, max_new_tokens=cfg.sweep.max_new_tokens, **kw)

    abstract = sh.abstract_sharded_params(mcfg, mesh, dtype, rules)
    checked = sh.per_device_bytes(abstract)
    if checked != sweep.param_bytes:
        raise SystemExit(f"planner {sweep.param_bytes} != eval_shape {checked} bytes/device")

    chip = sh.TPU_SPECS[_CHIP.value]
    devices = data * model
    print(f"\n== {name}: {mcfg.num_params / 1e9:.2f}B params, {cfg.dtype}, "
          f"mesh (data, model) = {(data, model)} on {devices} x {_CHIP.value} ==")  # fmt: skip
    print(f"param bytes per device verified against jax.eval_shape: {checked / GiB:.2f} GiB")
    if sweep.replicated_dims:
        print(f"note: replicated because {model} does not divide them: {sweep.replicated_dims}")
    b_dev = math.ceil(batch / data)
    rows = [
        ("params", sweep.param_bytes),
        (f"activations (B={b_dev}/device, T={_SEQ_LEN.value})", sweep.activation_bytes),
        ("extraction capture resid[L+1,B,T,D] f32", extract.capture_bytes),
        (f"KV cache (+{cfg.sweep.max_new_tokens} generated tokens)", gen.kv_cache_bytes),
    ]
    for label, n in rows:
        print(f"  {label:<46} {n / GiB:9.2f} GiB")
    peak = max(extract.total_bytes, gen.total_bytes)
    fits = "fits" if peak <= 0.9 * chip["hbm"] else "DOES NOT FIT"
    print(f"  {'peak (extraction or generation)':<46} {peak / GiB:9.2f} GiB of "
          f"{chip['hbm'] / GiB:.0f} GiB HBM: {fits}")  # fmt: skip

    sizes = dict(prompts=prompts, seq_len=_SEQ_LEN.value, conditions=conditions)
    prefill = sum(sh.sweep_flops(mcfg, prefix_layer=layer, **sizes) for layer in layers)
    no_reuse = len(layers) * sh.sweep_flops(mcfg, prefix_layer=0, **sizes)
    new_tokens = len(layers) * conditions * prompts * cfg.sweep.max_new_tokens
    generation = 2 * mcfg.num_params * new_tokens  # upper bound: every condition generates
    total = prefill + generation
    seconds = total / (devices * chip["flops"] * _MFU.value)
    print(f"sweep: {prompts} prompts x {conditions} conditions at layers {layers}, "
          f"T={_SEQ_LEN.value}, +{cfg.sweep.max_new_tokens} generated tokens")  # fmt: skip
    print(f"  prefill FLOPs (2*N*tokens, prefix reuse) {prefill:.3e}  (without reuse "
          f"{no_reuse:.3e}, x{no_reuse / prefill:.2f})")  # fmt: skip
    print(f"  generation FLOPs (2*N*new tokens)      {generation:.3e}")
    print(f"  time at {_MFU.value:.0%} MFU                       {seconds / 60:9.1f} min  "
          f"~ ${seconds / 3600 * devices * chip['usd_hour']:.2f} on demand")  # fmt: skip

    print("other meshes on these chips (params + peak activations per device):")
    for m in (1, 2, 4, 8, 16):
        if devices % m or m > devices:
            continue
        p = sh.plan(mcfg, sh.abstract_mesh(devices // m, m), capture=True, **kw)
        print(
            f"  ({devices // m}, {m}): {p.total_bytes / GiB:8.2f} GiB"
            + (f"  (replicated: {', '.join(p.replicated_dims)})" if p.replicated_dims else "")
        )


def main(argv):
    del argv
    cfg = _CONFIG.value
    data, model = _mesh_shape(cfg)
    models = _models(cfg)
    if not models:
        raise SystemExit("nothing to plan: pass --model=<checkpoint dir or known model name>")
    for name in models:
        _report(name, cfg, data, model)


if __name__ == "__main__":
    run_main(main)
