"""Steering sweeps: vectors x layers x coefficients x prompts in one program per layer.

Dimension legend: B batch rows (= conditions x prompts), T time, D model width, L layers,
V vocabulary, I steering vectors (named concepts, then random directions), J concept
readouts, K coefficients, C conditions, N evaluation prompts, M neutral prompts, P joint
pairs (control, emotion), A sweep layers, W generated tokens.

A *condition* is a layer and a coefficient per vector (in units of that layer's median
residual norm): it adds `layer_norms[l] * Σ_i w_i v̂_i[l]` to `resid[l]` at every position,
which is exactly a PyTorch forward-pre-hook on decoder layer `l`. Single-vector grids
(`w = coef · e_i`) and joint control x emotion grids (`w = a · e_c + b · e_e`, for Δ_steer)
are both conditions.

How the work is laid out:
* One unsteered forward captures `resid[l]` for every prompt (prefix reuse, DESIGN.md §2);
  each steered prefill then runs only layers `l..L-1`, with logits at the first response
  position only (evaluation prompts) or at every position (neutral text, for the
  cross-entropy change).
* Conditions of one layer are folded into the batch axis of a single jitted program
  (`start_layer` is the only static value, so one compile per layer serves every vector
  and coefficient). Steered generation (`steered_generate`) shares the prompt prefill of
  the layers below the injection layer too and vmaps the rest (upper prefill and cached
  greedy decoding) over conditions.
* Conditions are processed in fixed-size chunks (sized from a memory budget, last chunk
  padded so shapes never change); each chunk is stored atomically (`results.ChunkStore`),
  so a killed sweep resumes and produces identical results.

Entry point: `run_sweep(model, vectors, prompts, config, workdir) -> SweepResults`.

Modules: `prompts` (SweepPrompts), `conditions` (settings, steering vectors, the condition
table), `programs` (the jitted prefill and generation programs), `chunks` (chunk and block
sizes, one chunk's run), `run` (`run_sweep`), `assemble` (SweepResults and the readout grids),
`summary` (steerability, modularity, Δ_steer), `standalone` (one model's sweep into a work
directory, as scripts/sweep.py runs it; not imported here, as it sits above emojax.pipeline).
"""

from emojax.sweep.assemble import BEHAVIOUR_KEYS, STYLE_KEYS, SweepResults
from emojax.sweep.chunks import generate_row_bytes, prefill_row_bytes, rows_for_budget
from emojax.sweep.conditions import (
    ARMS,
    CONTROLS,
    EMOTIONS,
    INPUT_KEYS,
    Conditions,
    SteeringVectors,
    build_conditions,
    default_config,
    joint_pairs,
    resolve_layers,
    steering_matrix,
)
from emojax.sweep.conditions import _resolve_config as _resolve_config  # tests call it here
from emojax.sweep.programs import _base_pass as _base_pass  # timed by emojax.benchmark.steering
from emojax.sweep.programs import (
    steered_eval,
    steered_generate,
    steered_generate_and_eval,
    steered_neutral,
)
from emojax.sweep.prompts import SweepPrompts
from emojax.sweep.run import run_sweep
from emojax.sweep.summary import (
    FAILURE_TYPES,
    JointArms,
    delta_steer_from_sweep,
    joint_arms,
    summarize,
)

__all__ = [
    "ARMS",
    "BEHAVIOUR_KEYS",
    "CONTROLS",
    "EMOTIONS",
    "FAILURE_TYPES",
    "INPUT_KEYS",
    "STYLE_KEYS",
    "Conditions",
    "JointArms",
    "SteeringVectors",
    "SweepPrompts",
    "SweepResults",
    "build_conditions",
    "default_config",
    "delta_steer_from_sweep",
    "generate_row_bytes",
    "joint_arms",
    "joint_pairs",
    "prefill_row_bytes",
    "resolve_layers",
    "rows_for_budget",
    "run_sweep",
    "steered_eval",
    "steered_generate",
    "steered_generate_and_eval",
    "steered_neutral",
    "steering_matrix",
    "summarize",
]
