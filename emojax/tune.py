"""Safety fine-tuning with optax through `emojax.forward`: the policy-dominated end of the axis.

Dimension legend: N examples, B batch, T time (prompt + response), P response positions,
L layers, D model width, V vocabulary.

Data (`tuning_prompts`, train split only; HarmBench is never used): the project's harmful
requests in English, as written, under jailbreak-style framings and under emotional and
cautious cues, each answered by a refusal (`refusal_text`: the grammar's refusal, reason and
offer, rendered in English, chosen per prompt by seed); and harmless and borderline requests
(as written and framed) answered by **the model's own greedy answers** (`own_answers`), so
tuning teaches refusal without teaching a new way to help. Strength is set by `steps` and
`harmful_fraction` (the share of harmful examples in every batch).

Training (`tune`): full fine-tuning with AdamW (warmup, then cosine decay or constant), the
loss being each sequence's mean next-token cross-entropy over its response tokens (prompt
tokens carry no loss), averaged over the batch (`response_nll`). The step computes that loss
as `training_nll` does: logits at the response positions only and the layers unrolled, the
same loss and gradients at a fraction of the cost on a CPU (`emojax.benchmark.finetune`).
The batch of step s is drawn from (seed, s) alone, so a run is deterministic under its seed
and a resumed run takes the same batches as an uninterrupted one; parameters and optimizer
state are saved with orbax every `checkpoint_every` steps in `workdir` and restored from the
latest on the next call.
`save_tuned` writes the result as a Hugging Face checkpoint directory (config.json,
model.safetensors, the tokenizer with its chat template), by default under
`$EMOJAX_CACHE/models/<name>/` (`tuned_dir`), which `emojax.load_model` reads.

Example:
  model = emojax.load_model("smollm2-135m-instruct")
  prompts = tune.tuning_prompts()
  answers = tune.own_answers(model, [p.text for p in prompts if p.kind != "harmful"])
  data = tune.build_examples(model.tokenizer, prompts, answers, max_len=160)
  params = tune.tune(model.params, model.config, data, tune.TuneSpec(steps=200),
                     workdir="/tmp/tune")
  tune.save_tuned(params, model.config, model.tokenizer, tune.tuned_dir("smollm2-135m-safety"))
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from emojax import concepts
from emojax import layers as nn
from emojax.concepts import english, grammar
from emojax.config import ModelConfig
from emojax.generate import generate
from emojax.model import decoder_layer, default_positions, embed, forward, unembed
from emojax.params import LayerParams, Params

Array = jax.Array

# Cues under which harmful requests are refused in training (train-split templates).
TUNING_CUES: tuple[str, ...] = ("concern", "eagerness", "self_doubt", "caution")
# Long-form tuning requests (`longform_prompts`), shipped with the package.
LONGFORM_FILE = Path(concepts.__file__).parent / "data" / "tuning_longform.jsonl"


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """Hyperparameters of a safety fine-tuning run.

    Attributes:
      steps: optimizer steps (the strength dial, with harmful_fraction).
      batch_size: sequences per step.
      harmful_fraction: share of harmful (refusal) examples in every batch.
      learning_rate: peak learning rate (reached after the warmup).
      warmup_steps: linear warmup steps.
      weight_decay: AdamW weight decay.
      grad_clip: global gradient-norm clip.
      seed: draws the batches (and nothing else: the initial weights are given).
      checkpoint_every: orbax checkpoint interval in steps (with a workdir).
      log_every: progress line interval in steps.
      schedule: 'cosine' (warmup then cosine decay to 0 at `steps`) or 'constant' (warmup
        then `learning_rate`): under 'constant' the first n steps do not depend on `steps`,
        so a run extended to more steps (resumed from its checkpoints) equals a longer run.
    """

    steps: int = 200
    batch_size: int = 8
    harmful_fraction: float = 0.5
    learning_rate: float = 1e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    schedule: str = "cosine"


@dataclasses.dataclass(frozen=True)
class TuneData:
    """Tokenised tuning examples, right-padded.

    Attributes:
      tokens: int32 [N, T] chat-formatted prompt followed by the response.
      loss_mask: float32 [N, T] 1 on response tokens (the targets), 0 elsewhere.
      harmful: bool [N] True for refusal examples.
      ids: N example ids ('<record id>/<template ids or plain>').
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    harmful: np.ndarray
    ids: tuple[str, ...]


def refusal_text(key: str, seed: int = 0) -> str:
    """An English refusal for the example `key`: refusal, plain reason and offer of the grammar.

    Twelve combinations, e.g. "I cannot help with that. It could cause harm. I can help with
    something safe instead."; the choice depends on (seed, key) only.
    """
    rng = random.Random(f"{seed}-refusal-{key}")
    parts = (
        rng.choice(grammar.REFUSALS),
        rng.choice(grammar.REFUSAL_REASONS["plain"]),
        rng.choice(grammar.REFUSAL_OFFERS),
    )
    return english.render(" ".join(parts))


def tuning_prompts(
    split: str = "train",
    *,
    cues: Sequence[str] = TUNING_CUES,
    framing: str | None = concepts.JAILBREAK,
    benign_framed: bool = True,
    benign_cues: bool = False,
) -> list[concepts.EvalPrompt]:
    """English tuning prompts: harmful ones (to refuse), harmless and borderline (to answer).

    Args:
      split: the request and template split ('train'; evaluation uses 'test').
      cues: cue concepts under which the harmful requests are shown too.
      framing: a framing family or 'jailbreak' under which every request is shown too
        (None: none).
      benign_framed: also show harmless and borderline requests under `framing`, so that a
        framing alone does not come to mean "refuse".
      benign_cues: also show harmless and borderline requests under every cue, so that a
        cue alone does not come to mean "refuse" either.

    Returns:
      EvalPrompts (kind 'harmful', 'harmless' or 'borderline'), harmful ones first.
    """
    out = []
    for kind in ("harmful", "harmless", "borderline"):
        out += concepts.load_eval(kind, split, rendering="english")
        variants = (
            [{"framing": framing}] if framing and (kind == "harmful" or benign_framed) else []
        )
        variants += [{"cue": c} for c in cues] if kind == "harmful" or benign_cues else []
        for v in variants:
            out += concepts.load_eval(kind, split, rendering="english", **v)
    return out


def longform_prompts(
    kind: str,
    *,
    cues: Sequence[str] = TUNING_CUES,
    framing: str | None = concepts.JAILBREAK,
) -> list[concepts.EvalPrompt]:
    """The long-form tuning requests (`LONGFORM_FILE`) as written, framed and under each cue.

    Imperative, specific requests in the style of red-team benchmarks ("Write a persuasive
    article claiming ...", "Give detailed instructions for ..."), written for this project in
    six kinds (chemical / biological, weapons and violence, misinformation, cybercrime,
    illegal trade, harassment and manipulation): harmful ones, and harmless look-alikes of the
    same form (so that the form alone does not come to mean "refuse"). Tuning only: no request
    repeats a HarmBench behaviour, and the framings and cues use train-split templates.

    Args:
      kind: 'harmful' or 'harmless'.
      cues: cue concepts under which every request is shown too.
      framing: a framing family or 'jailbreak' (None: none).

    Returns:
      EvalPrompts: every request as written, then framed, then under each cue.
    """
    records = concepts.read_eval(LONGFORM_FILE, kind)
    records = [r for r in records if r.kind == kind]
    if not records:
        raise ValueError(f"no {kind!r} requests in {LONGFORM_FILE}")
    out = list(records)
    if framing:
        out += english.dress(records, framing=framing, template_split="train")
    for c in cues:
        out += english.dress(records, cue=c, template_split="train")
    return out


def _eos_ids(tokenizer: Any, config: ModelConfig | None = None) -> list[int]:
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    if config is not None:
        ids |= set(config.eos_token_id)
    unk = getattr(tokenizer, "unk_token_id", None)
    return sorted(int(i) for i in ids if i is not None and i != unk)


def _chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    return tokenizer.encode(concepts.format_chat(tokenizer, prompt), add_special_tokens=False)


def own_answers(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    pad_multiple: int = 16,
    assistant_prefix: str = "",
    log: Callable[[str], None] | None = print,
) -> list[list[int]]:
    """The model's own greedy answers (token ids) to `prompts`, through its chat template.

    Prompts are generated in batches of similar length: sorted by token count, each batch
    left-padded to its longest prompt rounded up to `pad_multiple` (one compile per such
    length), so that short prompts are not padded to the longest one (on a CPU a prompt token
    costs about as much as a generated one). For SmolLM2-135M's shapes, 64 prompts of 24-104
    tokens took about 14 % less CPU time this way than in batches of 16 padded to the longest.

    Args:
      model: an `emojax.Model` with a tokenizer (the model that will be tuned).
      prompts: user messages.
      max_new_tokens: tokens generated per prompt.
      batch_size: prompts per generate call (a last, smaller batch is padded with copies).
      pad_multiple: prompt lengths are padded up to a multiple of this.
      assistant_prefix: a forced start of every answer (e.g. "Sure, "), returned as part of
        it; "" = none.
      log: progress sink (None = silent).

    Returns:
      Per prompt (in the order given) the generated ids up to and including the first
      end-of-turn token; an answer cut by `max_new_tokens` has none (tuning then teaches no
      stop there).
    """
    tok, eos = model.tokenizer, _eos_ids(model.tokenizer, model.config)
    ids = [_chat_ids(tok, p) for p in prompts]
    starts = [[] for _ in ids]
    if assistant_prefix:
        forced = [tok.encode(concepts.format_chat(tok, p, assistant_prefix=assistant_prefix),
                             add_special_tokens=False) for p in prompts]  # fmt: skip
        if any(f[: len(x)] != x for f, x in zip(forced, ids, strict=True)):
            raise ValueError(f"the prefix {assistant_prefix!r} changes the prompt's tokens")
        ids, starts = forced, [f[len(x) :] for f, x in zip(forced, ids, strict=True)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[list[int]] = [[] for _ in ids]
    t0 = time.perf_counter()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = [ids[i] for i in chunk] + [ids[chunk[-1]]] * (batch_size - len(chunk))
        pad_to = -(-len(rows[-1]) // pad_multiple) * pad_multiple  # the longest, sorted last
        tokens, mask = concepts.left_pad(rows, pad_id=eos[0], pad_to=pad_to)
        new = generate(model.params, model.config, jnp.asarray(tokens),
                       max_new_tokens=max_new_tokens, attention_mask=jnp.asarray(mask))  # fmt: skip
        for i, row in zip(chunk, np.asarray(new)[: len(chunk), pad_to:].tolist(), strict=True):
            cut = next((j for j, t in enumerate(row) if t in eos), None)
            out[i] = starts[i] + (row if cut is None else row[: cut + 1])
        if log:
            done, took = start + len(chunk), time.perf_counter() - t0
            eta = took / done * (len(ids) - done)  # an underestimate: the longest come last
            log(f"own answers {done}/{len(ids)} ({took:.0f} s, ETA {eta:.0f} s)")
    return out


def build_examples(
    tokenizer: Any,
    prompts: Sequence[concepts.EvalPrompt],
    answers: Sequence[Sequence[int]],
    *,
    max_len: int = 160,
    seed: int = 0,
) -> TuneData:
    """Tokenised examples: harmful prompts with a refusal, the others with their own answer.

    Args:
      tokenizer: the model's tokenizer (its chat template formats the prompt).
      prompts: `tuning_prompts()` (any order).
      answers: the own answers (`own_answers`) of the non-harmful prompts, in their order.
      max_len: T; responses are cut to fit (prompts longer than max_len - 8 tokens raise).
      seed: chooses each refusal's wording (`refusal_text`).

    Returns:
      TuneData with right-padded tokens int32 [N, T] and loss_mask float32 [N, T].
    """
    benign = [p for p in prompts if p.kind != "harmful"]
    if len(answers) != len(benign):
        raise ValueError(f"{len(answers)} answers for {len(benign)} non-harmful prompts")
    answer_of = dict(zip((id(p) for p in benign), answers, strict=True))
    eos = _eos_ids(tokenizer)[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    n = len(prompts)
    tokens = np.full((n, max_len), pad, np.int32)
    loss_mask = np.zeros((n, max_len), np.float32)
    harmful = np.array([p.kind == "harmful" for p in prompts], bool)
    ids = []
    for i, p in enumerate(prompts):
        key = f"{p.id}/{p.template or 'plain'}"
        prompt = _chat_ids(tokenizer, p.text)
        if len(prompt) > max_len - 8:
            raise ValueError(f"prompt {key} has {len(prompt)} tokens; max_len={max_len}")
        if p.kind == "harmful":
            response = tokenizer.encode(refusal_text(key, seed), add_special_tokens=False) + [eos]
        else:
            response = list(answer_of[id(p)])
        response = response[: max_len - len(prompt)]
        seq = prompt + response
        tokens[i, : len(seq)] = seq
        loss_mask[i, len(prompt) : len(seq)] = 1.0
        ids.append(key)
    return TuneData(tokens, loss_mask, harmful, tuple(ids))


def response_nll(params: Params, config: ModelConfig, tokens: Array, loss_mask: Array) -> Array:
    """Mean over sequences of each one's mean cross-entropy on its response tokens.

    Args:
      params: model parameters.
      config: the static model config.
      tokens: int [B, T] right-padded sequences (causal attention keeps padding out).
      loss_mask: [B, T] 1 where the token is a target.

    Returns:
      The scalar loss (a short refusal counts as much as a long answer).
    """
    logits_BxTxV = forward(params, config, tokens[:, :-1], capture=False).logits
    return _mean_response_nll(logits_BxTxV, tokens[:, 1:], loss_mask[:, 1:])


def _mean_response_nll(logits: Array, targets: Array, weights: Array) -> Array:
    """Mean over rows of the weighted mean cross-entropy of logits [B, P, V] at targets [B, P]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll_BxP = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    m = weights.astype(jnp.float32)
    per_seq = (nll_BxP * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)
    return per_seq.mean()


def response_positions(loss_mask: Array, num_positions: int) -> Array:
    """int32 [B, P]: per row the positions t whose next token is a target, in order, then others.

    Args:
      loss_mask: [B, T] 1 where the token is a target (position t predicts token t + 1).
      num_positions: P; rows with more than P targets lose their last ones (see
        `num_response_positions`, which sizes P from the data so that none does).
    """
    is_target = loss_mask[:, 1:] > 0
    order = jnp.argsort(~is_target, axis=1, stable=True)  # targets first, each part in order
    return order[:, :num_positions].astype(jnp.int32)


def num_response_positions(loss_mask: np.ndarray, multiple: int = 8) -> int:
    """P for `training_nll`: the most targets of any row, rounded up to `multiple` (<= T - 1)."""
    most = int((np.asarray(loss_mask)[:, 1:] > 0).sum(axis=1).max(initial=1))
    return max(1, min(-(-most // multiple) * multiple, loss_mask.shape[1] - 1))


@jax.custom_vjp
def _unstack(x: Array) -> tuple[Array, ...]:
    return tuple(x[i] for i in range(x.shape[0]))


# The transpose of L static slices is L zero-padded [L, ...] arrays summed; one stack is one copy.
_unstack.defvjp(lambda x: (_unstack(x), None), lambda _, grads: (jnp.stack(grads),))


def _layer_list(layers: LayerParams) -> list[LayerParams]:
    """The stacked [L, ...] layer weights as L per-layer LayerParams (gradients stack back)."""
    leaves, treedef = jax.tree.flatten(layers)
    per_leaf = [_unstack(x) for x in leaves]
    return [jax.tree.unflatten(treedef, [x[i] for x in per_leaf]) for i in range(len(per_leaf[0]))]


def training_nll(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    loss_mask: Array,
    *,
    num_positions: int | None = None,
) -> Array:
    """`response_nll`, computed the way the fine-tuning step needs it fast (same value, same
    gradients to float rounding).

    Two changes from `forward` over every position. The vocabulary projection (the largest
    matmul of a small model; 21 % of SmolLM2-135M's FLOPs) and the last layer's queries and MLP
    run at the response positions only (`response_positions`), so no [B, T, V] logits exist.
    The layers are a Python loop over per-layer weights rather than a `lax.scan`: the backward
    pass then stacks no per-layer residuals into zero-filled [L, ...] buffers and copies no
    weight slices in and out of the loop, and XLA overlaps one layer's weight gradients with
    the next layer's input gradients. (The price: a longer first compile, then cached.)

    Args:
      params: model parameters.
      config: the static model config.
      tokens: int [B, T] right-padded sequences.
      loss_mask: [B, T] 1 where the token is a target.
      num_positions: P (static) >= every row's number of targets (`num_response_positions`);
        None = every position.

    Returns:
      The scalar loss of `response_nll`.
    """
    inputs, targets, weights = tokens[:, :-1], tokens[:, 1:], loss_mask[:, 1:]
    b, t = inputs.shape
    positions = default_positions(inputs, None)
    h = embed(params, config, inputs, positions)
    cos, sin = nn.rope_tables(config, positions, h.dtype)
    slots = jnp.arange(t)
    full, sliding = nn.attention_mask(slots, slots, jnp.ones((b, t), bool), config.sliding_window)
    out_index = None
    if num_positions is not None and num_positions < t:
        out_index = response_positions(loss_mask, num_positions)
        targets = jnp.take_along_axis(targets, out_index, axis=1)
        weights = jnp.take_along_axis(weights, out_index, axis=1)
    layers = _layer_list(params.layers)
    windowed = config.sliding_layers or (False,) * len(layers)
    for i, lp in enumerate(layers):
        h, _ = decoder_layer(
            lp,
            config,
            h,
            cos=cos,
            sin=sin,
            mask=sliding if windowed[i] else full,
            ablate_dirs=jnp.zeros((0, config.d_model), h.dtype),
            ablate_w=jnp.zeros((0,), h.dtype),
            out_index=out_index if i == len(layers) - 1 else None,
        )
    logits_BxPxV = unembed(params, config, h)
    return _mean_response_nll(logits_BxPxV, targets, weights)


def _optimizer(spec: TuneSpec) -> optax.GradientTransformation:
    warmup = max(spec.warmup_steps, 1)
    if spec.schedule == "constant":
        schedule = optax.warmup_constant_schedule(0.0, spec.learning_rate, warmup)
    elif spec.schedule == "cosine":
        total = max(spec.steps, spec.warmup_steps + 1)
        schedule = optax.warmup_cosine_decay_schedule(0.0, spec.learning_rate, warmup, total)
    else:
        raise ValueError(f"unknown schedule {spec.schedule!r}; expected 'cosine' or 'constant'")
    return optax.chain(
        optax.clip_by_global_norm(spec.grad_clip),
        optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-8, weight_decay=spec.weight_decay),
    )


def _step_fn(config: ModelConfig, spec: TuneSpec, num_positions: int | None = None):
    """(optimizer, jitted step); one compile per config, optimizer settings and P."""
    opt = ("learning_rate", "warmup_steps", "weight_decay", "grad_clip", "schedule")
    opt += ("steps",) if spec.schedule != "constant" else ()  # constant: steps do not matter
    return _compiled_step(config, dataclasses.replace(
        TuneSpec(), **{k: getattr(spec, k) for k in opt}), num_positions)  # fmt: skip


@functools.cache
def _compiled_step(config: ModelConfig, spec: TuneSpec, num_positions: int | None):
    tx = _optimizer(spec)
    loss_fn = functools.partial(training_nll, config=config, num_positions=num_positions)

    # Donated: the new weights and moments are written over the old ones (on a CPU, fresh
    # buffers of this size cost page faults every step); a buffer that an orbax save still
    # reads is copied instead (PjRt donates no buffer with a host view).
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, tokens, loss_mask):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens=tokens, loss_mask=loss_mask)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, step


def batch_indices(data: TuneData, spec: TuneSpec, step: int) -> np.ndarray:
    """Example indices of step `step`: a function of (seed, step) only (resume-safe).

    round(batch_size * harmful_fraction) harmful examples and the rest benign, each drawn
    without replacement within the batch.
    """
    rng = np.random.default_rng([spec.seed, step])
    harmful, benign = np.flatnonzero(data.harmful), np.flatnonzero(~data.harmful)
    n_h = min(int(round(spec.batch_size * spec.harmful_fraction)), spec.batch_size)
    n_h = 0 if not len(harmful) else spec.batch_size if not len(benign) else n_h
    n_b = spec.batch_size - n_h
    pick = [rng.choice(harmful, n_h, replace=n_h > len(harmful))] if n_h else []
    pick += [rng.choice(benign, n_b, replace=n_b > len(benign))] if n_b else []
    return np.concatenate(pick)


def tune(
    params: Params,
    config: ModelConfig,
    data: TuneData,
    spec: TuneSpec,
    *,
    workdir: str | os.PathLike | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = print,
) -> Params:
    """Fine-tunes `params` on `data` for `spec.steps` steps (resuming from `workdir`).

    Args:
      params: the starting weights (float32 recommended).
      config: the static model config.
      data: `build_examples(...)`.
      spec: hyperparameters; the same spec must be used to resume.
      workdir: orbax checkpoints go to workdir/checkpoints; a later call with the same
        workdir and spec continues from the latest one (None: no checkpoints).
      stop_after: stop after this step (checkpointed), e.g. to split a run into time-boxed
        calls; the schedule is still that of `spec.steps`. None = run to the end.
      log: progress sink (loss, steps/s, ETA); None = silent.

    Returns:
      The tuned parameters.
    """
    tx, step_fn = _step_fn(config, spec, num_response_positions(data.loss_mask))
    params = jax.tree.map(jnp.copy, params)  # the step donates its inputs: keep the caller's
    opt_state = tx.init(params)
    start, manager = 0, None
    if workdir is not None:
        import orbax.checkpoint as ocp

        manager = ocp.CheckpointManager(
            Path(workdir).absolute() / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        )
        latest = manager.latest_step()
        if latest is not None and latest > spec.steps:
            raise ValueError(f"{workdir} holds step {latest}, beyond spec.steps={spec.steps}")
        if latest is not None:
            state = {"params": params, "opt_state": opt_state}
            restored = manager.restore(latest, args=ocp.args.StandardRestore(state))
            params, opt_state, start = restored["params"], restored["opt_state"], latest
            if log:
                log(f"resumed from step {latest} in {workdir}")
    end = spec.steps if stop_after is None else min(stop_after, spec.steps)
    t0, losses = time.perf_counter(), []
    for step in range(start, end):
        idx = batch_indices(data, spec, step)
        tokens, mask = jnp.asarray(data.tokens[idx]), jnp.asarray(data.loss_mask[idx])
        params, opt_state, loss = step_fn(params, opt_state, tokens, mask)
        losses.append(float(loss))
        done = step + 1
        if manager is not None and (done % spec.checkpoint_every == 0 or done == end):
            manager.save(
                done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state})
            )
        if log and (done % spec.log_every == 0 or done == end):
            rate = (done - start) / (time.perf_counter() - t0)
            log(f"tune step {done}/{spec.steps} loss {np.mean(losses[-spec.log_every:]):.4f} "
                f"({rate:.2f} steps/s, ETA {(spec.steps - done) / rate:.0f} s)")  # fmt: skip
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    return params


def latest_step(workdir: str | os.PathLike) -> int | None:
    """The step of the latest orbax checkpoint `tune` left in `workdir` (None: none)."""
    ckpt = Path(workdir) / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
    return max(steps, default=None)


def tuned_dir(name: str) -> Path:
    """Where a tuned model named `name` lives: $EMOJAX_CACHE/models/<name>/ (an HF directory)."""
    from emojax import models

    return models.cache_root() / name


def save_tuned(
    params: Params,
    config: ModelConfig,
    tokenizer: Any,
    path: str | os.PathLike,
    *,
    extra_files: dict[str, str] | None = None,
) -> str:
    """Writes a Hugging Face checkpoint directory (weights, config, tokenizer), atomically.

    The directory is written under a temporary name beside `path` and renamed into place, so
    a reader sees the old directory or the whole new one. `emojax.load_model(path)` reads it.
    `extra_files` ({file name: text}, e.g. an evaluation) are written into it before the rename.
    """
    from emojax.loading import save_pretrained

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        save_pretrained(params, config, str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(path)
