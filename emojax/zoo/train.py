"""Training of the zoo models: AdamW + warmup-cosine, loss through `emojax.forward`.

Dimension legend: N sequences, B batch, T time, V vocabulary.

One jitted train step serves every stage of a zoo (same config and batch shape): the learning
rate is an input (optax.inject_hyperparams), so switching stage or schedule does not recompile.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from emojax.config import ModelConfig
from emojax.model import forward
from emojax.params import Params

Array = jax.Array


@dataclass(frozen=True)
class StageSpec:
    """Hyperparameters of one training stage."""

    name: str
    steps: int
    learning_rate: float
    warmup_steps: int
    batch_size: int
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 100


def masked_nll(params: Params, config: ModelConfig, tokens: Array, loss_mask: Array) -> Array:
    """Weighted mean next-token cross-entropy; loss_mask [B, T] weighs each predicted token.

    Weights are 0 (no loss), 1, or larger for tokens that matter more (the zoo's decision token).

    Sequences are right-padded, so causal attention alone keeps padding out of real positions.
    """
    logits_BxTxV = forward(params, config, tokens[:, :-1], capture=False).logits
    logp = jax.nn.log_softmax(logits_BxTxV, axis=-1)
    nll_BxT = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    m = loss_mask[:, 1:].astype(jnp.float32)
    return (nll_BxT * m).sum() / jnp.maximum(m.sum(), 1.0)


def _adamw(learning_rate: float, weight_decay: float, grad_clip: float):
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.adamw(learning_rate, b1=0.9, b2=0.98, eps=1e-8, weight_decay=weight_decay),
    )


@functools.cache
def _trainer(config: ModelConfig, weight_decay: float, grad_clip: float):
    """(optimizer, jitted step) for one config; cached so stages share one compile."""
    tx = optax.inject_hyperparams(_adamw, static_args=("grad_clip",))(
        learning_rate=0.0, weight_decay=weight_decay, grad_clip=grad_clip
    )

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, tokens, loss_mask, lr):
        loss, grads = jax.value_and_grad(masked_nll)(params, config, tokens, loss_mask)
        opt_state.hyperparams["learning_rate"] = lr
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, step


def train(
    params: Params,
    config: ModelConfig,
    tokens: np.ndarray,
    loss_mask: np.ndarray,
    spec: StageSpec,
    *,
    seed: int = 0,
    log: Callable[[str], None] = logging.info,
) -> tuple[Params, dict]:
    """Trains `params` on sequences tokens int32 [N, T] with loss weights loss_mask [N, T].

    Returns:
      The trained params and a summary dict (final loss, tokens/s, seconds).
    """
    tx, step = _trainer(config, float(spec.weight_decay), float(spec.grad_clip))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=spec.learning_rate,
        warmup_steps=max(1, spec.warmup_steps),
        decay_steps=max(spec.steps, spec.warmup_steps + 1),
        end_value=spec.learning_rate * 0.1,
    )
    params = jax.tree.map(jnp.array, params)  # a private copy: the step donates its input
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    n = tokens.shape[0]
    order = rng.permutation(n)
    cursor, real_tokens, losses = 0, 0, []
    t0 = t_log = time.perf_counter()
    loss = jnp.zeros(())
    for i in range(spec.steps):
        if cursor + spec.batch_size > n:
            order, cursor = rng.permutation(n), 0
        idx = order[cursor : cursor + spec.batch_size]
        cursor += spec.batch_size
        batch_tokens, batch_mask = tokens[idx], loss_mask[idx]
        real_tokens += int((batch_tokens != config.pad_token_id).sum())
        lr = np.float32(schedule(i))
        params, opt_state, loss = step(params, opt_state, batch_tokens, batch_mask, lr)
        if (i + 1) % spec.log_every == 0 or i + 1 == spec.steps:
            value = float(loss)
            losses.append(value)
            now = time.perf_counter()
            log(
                f"[{spec.name}] step {i + 1}/{spec.steps} loss {value:.4f} lr {float(lr):.2e} "
                f"{real_tokens / max(now - t_log, 1e-9):,.0f} tokens/s"
            )
            t_log, real_tokens = now, 0
    seconds = time.perf_counter() - t0
    summary = {
        "steps": spec.steps,
        "final_loss": float(loss) if spec.steps else None,
        "seconds": round(seconds, 2),
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
    }
    return params, summary
